// The browser SDK's entry: the `convtrack` and Segment-compatible `analytics`
// globals, auto-start from the script tag, and the calls queued by a snippet
// before this file loaded. No entry point ever throws into the page.

import { Client, VERSION } from './client.js';
import { toMinorUnits } from './money.js';
import { warn } from './transport.js';

/**
 * @template {(...args: any[]) => any} F
 * @param {F} fn
 * @returns {(...args: Parameters<F>) => ReturnType<F> | undefined}
 */
function safe(fn) {
  return (...args) => {
    try {
      return fn(...args);
    } catch (error) {
      warn('internal error (the page is unaffected): ' + (error && /** @type {Error} */ (error).message));
      return undefined;
    }
  };
}

/** Segment's trailing callback: called once the event is queued (durably, in localStorage). @param {any[]} args */
function callback(args) {
  const last = args[args.length - 1];
  if (typeof last === 'function') {
    args.pop();
    setTimeout(last, 0);
  }
  return args;
}

function start() {
  const w = /** @type {any} */ (window);
  const script = /** @type {HTMLScriptElement | null} */ (document.currentScript);
  const origin = script && script.src ? new URL(script.src).origin : location.origin;
  const client = new Client(origin);
  const api = {
    VERSION,
    init: safe((/** @type {import('./client.js').InitOptions} */ options) => client.init(options)),
    track: safe((/** @type {string} */ name, /** @type {any} */ props, /** @type {any} */ options) =>
      client.track(name, props, options)),
    page: safe((/** @type {any[]} */ ...args) => client.page(...args)),
    identify: safe((/** @type {any} */ userId, /** @type {any} */ traits) => client.identify(userId, traits)),
    consent: safe((/** @type {any} */ choices) => client.consent(choices)),
    reset: safe(() => client.reset()),
    ready: safe((/** @type {() => void} */ done) => client.ready(done)),
    flush: safe(() => client.flush()),
    status: safe(() => client.status()),
    toMinorUnits: safe(toMinorUnits),
  };
  const analytics = {
    VERSION,
    load: safe((/** @type {string} */ writeKey, /** @type {any} */ options) =>
      client.init(Object.assign({ writeKey }, options))),
    track: safe((/** @type {any[]} */ ...args) => {
      const [name, props, options] = callback(args);
      client.track(name, props, options);
    }),
    page: safe((/** @type {any[]} */ ...args) => client.page(...callback(args))),
    identify: safe((/** @type {any[]} */ ...args) => {
      const [userId, traits] = callback(args);
      client.identify(userId, traits);
    }),
    consent: api.consent,
    reset: api.reset,
    ready: api.ready,
    user: () => ({ id: safe(() => client.userId()), anonymousId: safe(() => client.anonymousId()) }),
  };
  // Calls a snippet stub queued before this file loaded: [method, ...args].
  const queued = [w.analytics, w.convtrack].map((stub, i) => {
    const calls = Array.isArray(stub) ? stub.slice() : [];
    if (stub && stub._writeKey) calls.unshift(['load', stub._writeKey, stub._loadOptions]);
    return { calls, target: /** @type {Record<string, any>} */ (i === 0 ? analytics : api) };
  });
  w.convtrack = api;
  if (!w.analytics || Array.isArray(w.analytics)) w.analytics = analytics;
  const writeKey = script && script.getAttribute('data-write-key');
  if (writeKey) client.init({ writeKey, endpoint: script.getAttribute('data-endpoint') || origin });
  queued.forEach(({ calls, target }) =>
    calls.forEach((call) => {
      const method = Array.isArray(call) && target[call[0]];
      if (typeof method === 'function') method(...call.slice(1));
    }),
  );
}

try {
  if (typeof window !== 'undefined' && !(/** @type {any} */ (window).convtrack || {}).VERSION) start();
} catch (error) {
  warn('could not start: ' + error);
}
