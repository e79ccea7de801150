// Delivery: a bounded localStorage queue that outlives reloads and offline
// spells; fetch(keepalive) with up to 3 retries 1 s apart (Retry-After honoured
// on 429/503); sendBeacon when the page goes away. Bodies are text/plain, so
// the browser sends no CORS preflight.

import { loadJson, save } from './storage.js';

const QUEUE_KEY = '_ct_queue';
const LEASE_MS = 30000; // another tab's claim on a queued event lapses after this
const RETRY_MS = 1000;
const RETRIES = 3;
const MAX_RETRY_AFTER_MS = 60000;
const PAUSE_MS = 30000; // after a round of retries, before the next round (sooner: online, a new page)
const MAX_ATTEMPTS = 25; // over page loads, before an event is given up (and counted)
const MAX_REQUEST_BYTES = 60000; // keepalive fetch and sendBeacon carry at most 64 KiB
const MAX_REQUEST_EVENTS = 100;

/**
 * @typedef {Record<string, any>} WireEvent
 * @typedef {{ e: WireEvent, o: string, t: number, r: number, a: number, n: number, c: number }} Item
 *   e: the event; o: the page (instance) that claims it; t: when it claimed it
 *   (0: released); r: not before (ms, the retry wait); a: tries in this round;
 *   n: tries over all page loads; c: when it was queued.
 * @typedef {{ endpoint: string, writeKey: string, maxQueue: number, flushIntervalMs: number }} Settings
 */

export class Transport {
  /** @param {Settings} settings @param {string} instance this page's id */
  constructor(settings, instance) {
    this.settings = settings;
    this.instance = instance;
    /** @type {Record<string, boolean>} events in a request now (true: a keepalive one) */
    this.inflight = {};
    this.leaving = false;
    this.busy = false;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.timer = undefined;
    this.timerAt = 0;
    /** @type {{ sent: number, dropped: number, rejected: number }} */
    this.counts = { sent: 0, dropped: 0, rejected: 0 };
  }

  /** @returns {Item[]} */
  items() {
    const items = loadJson(QUEUE_KEY, /** @type {Item[]} */ ([]));
    return Array.isArray(items) ? items : [];
  }

  /** @param {Item[]} items */
  store(items) {
    save(QUEUE_KEY, JSON.stringify(items));
  }

  /** Queue an event (stored before any attempt) and schedule a flush. @param {WireEvent} event */
  enqueue(event) {
    const items = this.items();
    const now = Date.now();
    items.push({ e: event, o: this.instance, t: now, r: 0, a: 0, n: 0, c: now });
    const over = items.length - this.settings.maxQueue;
    if (over > 0) {
      // Bounded: the oldest go, and are counted (and said), never silently.
      items.splice(0, over);
      this.counts.dropped += over;
      warn('queue full: dropped the ' + over + ' oldest event(s)');
    }
    this.store(items);
    this.schedule(this.settings.flushIntervalMs);
  }

  /** @param {number} delayMs */
  schedule(delayMs) {
    const at = Date.now() + delayMs;
    if (this.timer !== undefined && this.timerAt <= at) return;
    clearTimeout(this.timer);
    this.timerAt = at;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.flush(false);
    }, delayMs);
  }

  /** @param {Item} item @param {number} now */
  mayTake(item, now) {
    return (
      !this.inflight[item.e.event_id] &&
      (item.o === this.instance || item.t === 0 || now - item.t > LEASE_MS)
    );
  }

  /**
   * Claim the events this page may send: its own, released ones, and those whose
   * claimer stopped (a closed tab); `nextAt` is when the next waiting one is due.
   * @param {boolean} all also those still waiting for a retry
   * @returns {{ ready: Item[], nextAt: number }}
   */
  claim(all) {
    const now = Date.now();
    const items = this.items();
    let nextAt = 0;
    const ready = items.filter((item) => {
      if (!this.mayTake(item, now)) return false;
      if (all || item.r <= now) return true;
      nextAt = nextAt && nextAt < item.r ? nextAt : item.r;
      return false;
    });
    ready.forEach((item) => {
      item.o = this.instance;
      item.t = now;
    });
    if (ready.length) this.store(items);
    return { ready, nextAt };
  }

  /** @param {string[]} ids @param {(item: Item) => boolean} [keep] */
  finish(ids, keep) {
    ids.forEach((id) => delete this.inflight[id]);
    const done = /** @type {Record<string, true>} */ ({});
    ids.forEach((id) => (done[id] = true));
    this.store(this.items().filter((item) => !done[item.e.event_id] || (keep ? keep(item) : false)));
  }

  /**
   * Send what is queued, one request at a time.
   * @param {boolean} now also what waits for a retry (a new page, back online, flush())
   */
  flush(now) {
    if (now) {
      const items = this.items();
      items.forEach((item) => {
        if (this.mayTake(item, Date.now())) item.r = 0;
      });
      this.store(items);
    }
    if (this.busy || this.leaving || navigator.onLine === false) return; // offline: `online` resumes
    const { ready, nextAt } = this.claim(false);
    if (!ready.length) {
      if (nextAt) this.schedule(Math.max(0, nextAt - Date.now()));
      return;
    }
    const chunk = take(ready);
    this.busy = true;
    const keepalive = this.request(chunk).body.length < MAX_REQUEST_BYTES;
    chunk.forEach((item) => (this.inflight[item.e.event_id] = keepalive));
    this.post(chunk).then(
      () => {
        this.busy = false;
        this.flush(false);
      },
      () => {
        // Not expected (post handles its failures): free the events for a later try.
        chunk.forEach((item) => delete this.inflight[item.e.event_id]);
        this.busy = false;
      },
    );
  }

  /** One request for `chunk`, with its answer applied to the queue. @param {Item[]} chunk */
  async post(chunk) {
    const { url, body } = this.request(chunk);
    /** @type {Response | null} */
    let response = null;
    try {
      // keepalive lets a request outlive the page, within the browser's 64 KiB budget.
      const keepalive = body.length < MAX_REQUEST_BYTES;
      response = await fetch(url, { method: 'POST', body, keepalive, credentials: 'omit' });
    } catch (_) {
      // a network error (offline, DNS, refused, a CORS refusal): retried below
    }
    // The page is going away: a keepalive request's fate is the browser's now (see beacon).
    if (this.leaving) return;
    const ids = chunk.map((item) => item.e.event_id);
    const status = response ? response.status : 0;
    if (response && (response.ok || (status >= 400 && status < 500 && status !== 408 && status !== 429))) {
      // Every event has an outcome: accepted, or rejected for good (kept by the collector).
      this.counts.sent += chunk.length;
      if (!response.ok || status === 200) await this.report(response, chunk.length);
      this.finish(ids);
      return;
    }
    let waitMs = RETRY_MS;
    const retryAfter = response && (status === 429 || status === 503) && response.headers.get('retry-after');
    if (retryAfter) {
      const secs = parseFloat(retryAfter);
      const when = isNaN(secs) ? Date.parse(retryAfter) - Date.now() : secs * 1000;
      if (when > 0) waitMs = Math.min(when, MAX_RETRY_AFTER_MS);
    }
    const now = Date.now();
    let given = 0;
    this.finish(ids, (item) => {
      const sent = chunk.find((c) => c.e.event_id === item.e.event_id);
      if (!sent) return true;
      item.n = sent.n + 1;
      item.a = sent.a + 1;
      if (item.n >= MAX_ATTEMPTS) {
        given += 1;
        return false;
      }
      // After the round's retries, wait longer; the `online` event or the next page load goes sooner.
      item.r = now + (item.a > RETRIES ? PAUSE_MS : waitMs);
      if (item.a > RETRIES) item.a = 0;
      return true;
    });
    if (given) {
      this.counts.dropped += given;
      warn('gave up on ' + given + ' event(s) after ' + MAX_ATTEMPTS + ' tries');
    }
  }

  /** Say in the console which events the collector rejected, and why. @param {Response} response @param {number} sent */
  async report(response, sent) {
    try {
      const answer = await response.json();
      const rejected = answer.rejected || (answer.errors ? [answer] : []);
      if (!response.ok && !rejected.length) rejected.push(answer);
      this.counts.rejected += rejected.length;
      if (rejected.length) warn(rejected.length + ' of ' + sent + ' event(s) rejected: ' + JSON.stringify(rejected));
    } catch (_) {
      // an answer without a JSON body: nothing more to say
    }
  }

  /** @param {Item[]} chunk @returns {{ url: string, body: string }} */
  request(chunk) {
    const key = 'writeKey=' + encodeURIComponent(this.settings.writeKey);
    const base = this.settings.endpoint.replace(/\/+$/, '');
    const events = chunk.map((item) => {
      // A fresh event leaves its time to the collector's clock (a wrong client
      // clock cannot push it out of range); a late one says when it happened.
      const late = Date.now() - item.c > 60000;
      return late ? Object.assign({ timestamp: item.c }, item.e) : item.e;
    });
    if (events.length === 1) {
      return {
        url: base + '/v1/track?' + key + '&event_id=' + encodeURIComponent(events[0].event_id),
        body: JSON.stringify(events[0]),
      };
    }
    return { url: base + '/v1/batch?' + key, body: JSON.stringify({ batch: events }) };
  }

  /**
   * The page is hidden or going away (`leaving`): hand everything not yet in a
   * request to sendBeacon. Leaving, a keepalive fetch still under way is, like a
   * beacon, the browser's to finish; its answer will not be seen, so it leaves the
   * queue rather than be sent again by the next page.
   * @param {boolean} leaving
   */
  beacon(leaving) {
    if (leaving) {
      this.leaving = true;
      const handed = Object.keys(this.inflight).filter((id) => this.inflight[id]);
      if (handed.length) this.finish(handed);
    }
    // Offline, a beacon would be lost: what is queued waits for the next page instead.
    if (typeof navigator.sendBeacon !== 'function' || navigator.onLine === false) return this.release();
    clearTimeout(this.timer);
    this.timer = undefined;
    let items = this.claim(true).ready;
    while (items.length) {
      const chunk = take(items);
      items = items.slice(chunk.length);
      const { url, body } = this.request(chunk);
      let queued = false;
      try {
        queued = navigator.sendBeacon(url, body); // a string: text/plain;charset=UTF-8
      } catch (_) {
        // refused: kept for the next page
      }
      if (queued) {
        this.counts.sent += chunk.length;
        this.finish(chunk.map((item) => item.e.event_id));
      }
    }
    this.release();
  }

  /** What this page cannot send now is released, for the next page of this site. */
  release() {
    const items = this.items();
    items.forEach((item) => {
      if (item.o === this.instance && !this.inflight[item.e.event_id]) item.t = 0;
    });
    this.store(items);
  }
}

/** The first events of `items` that fit in one request. @param {Item[]} items */
function take(items) {
  let bytes = 20;
  let count = 0;
  while (count < items.length && count < MAX_REQUEST_EVENTS) {
    bytes += JSON.stringify(items[count].e).length + 20;
    if (bytes > MAX_REQUEST_BYTES && count > 0) break;
    count += 1;
  }
  return items.slice(0, count);
}

/** @param {string} message */
export function warn(message) {
  try {
    console.warn('[convtrack] ' + message);
  } catch (_) {
    // no console
  }
}
