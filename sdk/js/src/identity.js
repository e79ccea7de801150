// Who and where from: the anonymous id, the 30-minute sliding session (a
// first-party cookie), and the campaign and click ids of the session's landing.

import { getCookie, load, loadJson, save, setCookie, uuid } from './storage.js';

export const SESSION_MS = 30 * 60 * 1000;
const YEAR_SECS = 365 * 24 * 3600;
const UTM = ['source', 'medium', 'name', 'term', 'content'];
const CLICK_IDS = ['gclid', 'gbraid', 'wbraid', 'fbclid', 'ttclid', 'li_fat_id', 'msclkid'];

/**
 * @typedef {{ sid: string, campaign: Record<string, string>, click_ids: Record<string, string> }} Attribution
 */

/** The browser's anonymous id: localStorage, mirrored in a first-party cookie. */
export function anonymousId() {
  let id = load('_ct_aid') || getCookie('_ct_aid');
  if (!id) id = uuid();
  save('_ct_aid', id);
  setCookie('_ct_aid', id, YEAR_SECS);
  return id;
}

/**
 * The session id, opened or refreshed now: a session ends after 30 minutes
 * without an event. The cookie holds "<id>.<last activity ms>".
 * @param {number} now epoch ms
 * @returns {{ id: string, fresh: boolean }}
 */
export function touchSession(now) {
  const [id, last] = (getCookie('_ct_sid') || load('_ct_sid') || '').split('.');
  const alive = !!id && now - parseInt(last, 10) < SESSION_MS;
  const sid = alive ? id : uuid();
  const value = sid + '.' + now;
  setCookie('_ct_sid', value, SESSION_MS / 1000);
  save('_ct_sid', value);
  return { id: sid, fresh: !alive };
}

/**
 * Read UTM parameters and click ids off the landing URL and keep them for the
 * session; a later landing with its own parameters replaces them.
 * @param {string} sid the current session id
 * @param {string} search location.search
 * @param {number} now epoch ms (the fbc creation time)
 * @param {boolean} readFbp read Meta's _fbp cookie
 * @returns {Attribution}
 */
export function captureAttribution(sid, search, now, readFbp) {
  const params = new URLSearchParams(search);
  /** @type {Attribution} */
  const kept = loadJson('_ct_attr', { sid: '', campaign: {}, click_ids: {} });
  /** @type {Attribution} */
  const landed = { sid, campaign: {}, click_ids: {} };
  let found = false;
  UTM.forEach((field) => {
    const value = params.get('utm_' + (field === 'name' ? 'campaign' : field));
    if (value) landed.campaign[field] = value.slice(0, 1024);
    if (value) found = true;
  });
  CLICK_IDS.forEach((field) => {
    const value = params.get(field);
    if (value) landed.click_ids[field] = value.slice(0, 900);
    if (value) found = true;
  });
  const fbclid = landed.click_ids.fbclid;
  if (fbclid) {
    // Meta's format: fb.<subdomain index>.<creation ms>.<fbclid>; kept from the first sighting.
    const previous = kept.click_ids.fbclid === fbclid && kept.click_ids.fbc;
    landed.click_ids.fbc = previous || 'fb.1.' + now + '.' + fbclid;
  }
  const result = found ? landed : kept.sid === sid ? kept : { sid, campaign: {}, click_ids: {} };
  save('_ct_attr', JSON.stringify(result));
  const clickIds = Object.assign({}, result.click_ids);
  const fbc = getCookie('_fbc');
  if (fbc && !clickIds.fbc) clickIds.fbc = fbc;
  const fbp = readFbp && getCookie('_fbp');
  if (fbp) clickIds.fbp = fbp;
  return { sid, campaign: result.campaign, click_ids: clickIds };
}
