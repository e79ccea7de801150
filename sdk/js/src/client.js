// The tracking API: events in the collector's native shape, built from what
// the page says (track, page, identify, consent) and what the browser knows.

import { anonymousId, captureAttribution, touchSession } from './identity.js';
import { toMinorUnits } from './money.js';
import { load, loadJson, save, setCookie, uuid } from './storage.js';
import { Transport, warn } from './transport.js';

export const VERSION = __CONVTRACK_VERSION__;

/** Trait names (Segment's and ours) of the contact fields the collector hashes on arrival. */
const USER_FIELDS = /** @type {Record<string, string>} */ ({
  email: 'email', phone: 'phone', first_name: 'first_name', firstName: 'first_name',
  last_name: 'last_name', lastName: 'last_name', city: 'city', state: 'state', zip: 'zip',
  postalCode: 'zip', postal_code: 'zip', country: 'country', external_id: 'external_id',
  externalId: 'external_id',
});
const CONSENT_FIELDS = /** @type {Record<string, string>} */ ({
  ad_user_data: 'ad_user_data', ad_personalization: 'ad_personalization',
  analytics: 'analytics', analytics_storage: 'analytics',
});

/**
 * @typedef {Record<string, any>} Props
 * @typedef {{ writeKey: string, endpoint?: string, flushIntervalMs?: number, maxQueue?: number,
 *   defaultCurrency?: string, fbp?: boolean }} InitOptions
 * @typedef {{ event_id?: string, messageId?: string }} TrackOptions
 */

export class Client {
  /** @param {string} defaultEndpoint where the collector is when init names none */
  constructor(defaultEndpoint) {
    this.defaultEndpoint = defaultEndpoint;
    this.instance = uuid(); // this page load: context.client_id, with client_seq 1, 2, 3…
    this.seq = 0;
    /** @type {Transport | null} */
    this.transport = null;
    this.readFbp = true;
    this.defaultCurrency = '';
    /** @type {Array<() => void>} calls made before init */
    this.waiting = [];
    /** @type {Array<() => void>} */
    this.readyCallbacks = [];
  }

  /** @param {InitOptions} options */
  init(options) {
    if (this.transport) return;
    const writeKey = options && options.writeKey;
    if (!writeKey || typeof writeKey !== 'string') {
      warn('init needs { writeKey }');
      return;
    }
    this.readFbp = options.fbp !== false;
    this.defaultCurrency = String(options.defaultCurrency || '').toUpperCase();
    this.transport = new Transport(
      {
        writeKey,
        endpoint: options.endpoint || this.defaultEndpoint,
        maxQueue: options.maxQueue || 200,
        flushIntervalMs: options.flushIntervalMs === undefined ? 250 : options.flushIntervalMs,
      },
      this.instance,
    );
    const now = Date.now();
    captureAttribution(touchSession(now).id, location.search, now, this.readFbp);
    const transport = this.transport;
    addEventListener('pagehide', () => transport.beacon(true));
    addEventListener('pageshow', () => {
      transport.leaving = false; // back from the back/forward cache
      transport.flush(true);
    });
    document.addEventListener('visibilitychange', () => {
      if (document.visibilityState === 'hidden') transport.beacon(false);
    });
    addEventListener('online', () => transport.flush(true));
    this.waiting.splice(0).forEach((call) => call());
    this.readyCallbacks.splice(0).forEach((callback) => setTimeout(callback, 0));
    transport.flush(true); // what earlier pages left behind (offline, closed mid-send)
  }

  /** @param {() => void} callback */
  ready(callback) {
    if (this.transport) setTimeout(callback, 0);
    else this.readyCallbacks.push(callback);
  }

  /** @param {string} name @param {Props} [props] @param {TrackOptions} [options] */
  track(name, props, options) {
    if (!name || typeof name !== 'string') {
      warn('track needs an event name');
      return;
    }
    this.send(name, props || {}, options || {}, null);
  }

  /** Segment's page([category], [name], [properties]). @param {...any} args */
  page(...args) {
    const names = [];
    while (typeof args[0] === 'string' || args[0] === null) names.push(args.shift());
    const given = args[0] && typeof args[0] === 'object' ? args[0] : {};
    const props = Object.assign(
      { url: location.href, path: location.pathname, search: location.search, title: document.title,
        referrer: document.referrer },
      names.length > 1 ? { category: names[0], name: names[1] } : names[0] ? { name: names[0] } : {},
      given,
    );
    const now = Date.now();
    // A single-page app's navigation may land from a campaign link too.
    captureAttribution(touchSession(now).id, location.search, now, this.readFbp);
    this.send('page_view', props, {}, null);
  }

  /** @param {string | Props | null} [userId] @param {Props} [traits] */
  identify(userId, traits) {
    if (userId && typeof userId === 'object') {
      traits = userId;
      userId = null;
    }
    if (typeof userId === 'number') userId = String(userId);
    if (typeof userId === 'string' && userId) save('_ct_uid', userId);
    /** @type {Record<string, string>} */
    const user = {};
    /** @type {Props} */
    const rest = {};
    Object.keys(traits || {}).forEach((trait) => {
      const value = /** @type {Props} */ (traits)[trait];
      const field = USER_FIELDS[trait];
      if (field && (typeof value === 'string' || typeof value === 'number')) user[field] = String(value);
      else if (!field) rest[trait] = value; // contact fields never ride in properties (stored as sent)
    });
    this.send('identify', rest, {}, user);
  }

  /** Record the visitor's consent; it travels with every later event. @param {Props} choices */
  consent(choices) {
    const stored = this.consentState();
    Object.keys(choices || {}).forEach((name) => {
      const field = CONSENT_FIELDS[name];
      const value = choices[name];
      if (field && (typeof value === 'boolean' || value === 'granted' || value === 'denied')) {
        stored[field] = value === true || value === 'granted';
      } else warn('consent: ignored ' + name + ' (true/false or granted/denied for ' +
        Object.keys(CONSENT_FIELDS).join(', ') + ')');
    });
    save('_ct_consent', JSON.stringify(stored));
  }

  /** @returns {Record<string, boolean>} */
  consentState() {
    const stored = loadJson('_ct_consent', /** @type {Record<string, boolean>} */ ({}));
    return stored && typeof stored === 'object' ? stored : {};
  }

  /** Forget the user (a log-out): user id, anonymous id, session and campaign. */
  reset() {
    ['_ct_uid', '_ct_aid', '_ct_sid', '_ct_attr'].forEach((key) => save(key, null));
    setCookie('_ct_aid', '', 0);
    setCookie('_ct_sid', '', 0);
  }

  userId() {
    return load('_ct_uid');
  }

  anonymousId() {
    return anonymousId();
  }

  /** Send what is queued now. */
  flush() {
    if (this.transport) this.transport.flush(true);
  }

  status() {
    const transport = this.transport;
    return Object.assign(
      { client_id: this.instance, client_seq: this.seq, queued: transport ? transport.items().length : 0 },
      transport ? transport.counts : { sent: 0, dropped: 0, rejected: 0 },
    );
  }

  /**
   * @param {string} name @param {Props} props @param {TrackOptions} options
   * @param {Record<string, string> | null} user
   */
  send(name, props, options, user) {
    const transport = this.transport;
    if (!transport) {
      this.waiting.push(() => this.send(name, props, options, user));
      return;
    }
    const now = Date.now();
    const session = touchSession(now);
    const attribution = captureAttribution(session.id, '', now, this.readFbp);
    /** @type {Props} */
    let properties;
    try {
      properties = JSON.parse(JSON.stringify(props)) || {};
    } catch (_) {
      warn(name + ': properties are not JSON (a cycle?); sent without them');
      properties = {};
    }
    /** @type {Props} */
    const event = {
      event_id: String(options.event_id || options.messageId || uuid()),
      event_name: name,
      session_id: session.id,
      properties,
    };
    const userId = this.userId();
    if (userId) event.user_id = userId;
    if (typeof properties.conversion_token === 'string') {
      event.conversion_token = properties.conversion_token;
      delete properties.conversion_token;
    }
    this.money(event, properties);
    /** @type {Props} */
    const context = {
      page_url: location.href.slice(0, 4096),
      user_agent: navigator.userAgent,
      anonymous_id: anonymousId(),
      client_id: this.instance,
      client_seq: ++this.seq,
      library: { name: 'convtrack.js', version: VERSION },
    };
    if (document.referrer) context.referrer = document.referrer.slice(0, 4096);
    if (Object.keys(attribution.campaign).length) context.campaign = attribution.campaign;
    if (Object.keys(attribution.click_ids).length) context.click_ids = attribution.click_ids;
    event.context = context;
    const consent = this.consentState();
    if (Object.keys(consent).length) event.consent = consent;
    if (user && Object.keys(user).length) event.user = user;
    transport.enqueue(event);
  }

  /**
   * Segment's money (revenue, else value, else total, in major units) as exact minor units.
   * @param {Props} event @param {Props} properties
   */
  money(event, properties) {
    const amount = ['revenue', 'value', 'total']
      .map((field) => properties[field])
      .find((value) => value !== undefined && value !== null);
    if (amount === undefined) return;
    const currency = String(properties.currency || this.defaultCurrency).toUpperCase();
    const units = currency ? toMinorUnits(amount, currency) : null;
    if (currency) event.currency = currency;
    // Not exact (or no currency): sent as given, so the collector rejects it with
    // its code and keeps it for review, instead of the SDK rounding money.
    event.value = units === null ? amount : units;
    if (units === null) warn(event.event_name + ': value ' + amount + ' ' + currency + ' is not exact money');
  }
}
