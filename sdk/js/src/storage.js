// First-party storage that never throws: localStorage and cookies can be
// missing or refuse writes (private modes, sandboxed frames, full quotas).

/** @type {Record<string, string>} */
const memory = {};
/** @type {Record<string, true>} keys whose last localStorage write failed (quota, private mode) */
const unsaved = {};

/** @param {string} key @returns {string | null} */
export function load(key) {
  if (unsaved[key]) return key in memory ? memory[key] : null;
  try {
    const value = localStorage.getItem(key);
    if (value !== null) return value;
  } catch (_) {
    // fall through to the in-page copy
  }
  return key in memory ? memory[key] : null;
}

/** @param {string} key @param {string | null} value */
export function save(key, value) {
  if (value === null) delete memory[key];
  else memory[key] = value;
  try {
    if (value === null) localStorage.removeItem(key);
    else localStorage.setItem(key, value);
    delete unsaved[key];
  } catch (_) {
    unsaved[key] = true; // the in-page copy, newer than the stored one, serves this page
  }
}

/** @template T @param {string} key @param {T} fallback @returns {T} */
export function loadJson(key, fallback) {
  try {
    const text = load(key);
    return text === null ? fallback : JSON.parse(text);
  } catch (_) {
    return fallback;
  }
}

/** @param {string} name @returns {string | null} */
export function getCookie(name) {
  try {
    const found = document.cookie.split('; ').find((part) => part.indexOf(name + '=') === 0);
    return found ? decodeURIComponent(found.slice(name.length + 1)) : null;
  } catch (_) {
    return null;
  }
}

/** @type {string | undefined} */
let domain;

/**
 * The widest domain of this site that takes a cookie (shop.example for
 * www.shop.example), found by trying, as analytics tags do; none on localhost or an IP.
 */
function cookieDomain() {
  if (domain !== undefined) return domain;
  domain = '';
  const host = location.hostname;
  if (host.indexOf('.') < 0 || /^[\d.]+$|:/.test(host)) return domain;
  const parts = host.split('.');
  for (let i = parts.length - 2; i >= 0; i--) {
    const candidate = parts.slice(i).join('.');
    document.cookie = '_ct_probe=1; path=/; domain=' + candidate;
    if (getCookie('_ct_probe') === '1') {
      document.cookie = '_ct_probe=; path=/; max-age=0; domain=' + candidate;
      return (domain = candidate);
    }
  }
  return domain;
}

/** @param {string} name @param {string} value @param {number} maxAgeSecs 0 deletes */
export function setCookie(name, value, maxAgeSecs) {
  try {
    const site = cookieDomain();
    document.cookie =
      name + '=' + encodeURIComponent(value) + '; path=/; max-age=' + maxAgeSecs +
      '; SameSite=Lax' + (site ? '; domain=' + site : '') +
      (location.protocol === 'https:' ? '; Secure' : '');
  } catch (_) {
    // cookies disabled: the session lives in this page only
  }
}

/** A random UUID (v4), also where crypto.randomUUID is missing (older browsers, http pages). */
export function uuid() {
  try {
    if (crypto.randomUUID) return crypto.randomUUID();
  } catch (_) {
    // not a secure context
  }
  const bytes = new Uint8Array(16);
  try {
    crypto.getRandomValues(bytes);
  } catch (_) {
    for (let i = 0; i < 16; i++) bytes[i] = Math.floor(Math.random() * 256);
  }
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = Array.prototype.map.call(bytes, (b) => (b + 0x100).toString(16).slice(1)).join('');
  return hex.slice(0, 8) + '-' + hex.slice(8, 12) + '-' + hex.slice(12, 16) + '-' +
    hex.slice(16, 20) + '-' + hex.slice(20);
}
