// Money in major units (49.99) to exact integer minor units (4999), from the
// number's decimal text: never by multiplying floats (19.99 * 100 is 1998.9999…).

/** ISO 4217 currencies whose minor unit is not 2 digits (the table's "E" column). */
const EXPONENTS = /** @type {Record<string, number>} */ ({});
'BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF'
  .split(' ')
  .forEach((code) => (EXPONENTS[code] = 0));
'BHD IQD JOD KWD LYD OMR TND'.split(' ').forEach((code) => (EXPONENTS[code] = 3));
EXPONENTS.CLF = 4;
EXPONENTS.UYW = 4;

/** @param {string} currency an uppercase ISO 4217 code */
export function minorDigits(currency) {
  const digits = EXPONENTS[currency];
  return digits === undefined ? 2 : digits;
}

const DECIMAL = /^([+-]?)(\d*)(?:\.(\d*))?(?:e([+-]?\d{1,3}))?$/i;

/**
 * An amount in major units (a number or its decimal text) as integer minor units
 * of `currency`, or null when it is not a number or has more decimals than the
 * currency has (49.999 USD): such a value is sent as given, so that the collector
 * rejects it with a code and keeps it, rather than the SDK guessing.
 *
 * @param {unknown} amount
 * @param {string} currency
 * @returns {number | null}
 */
export function toMinorUnits(amount, currency) {
  let text = '';
  if (typeof amount === 'number' && isFinite(amount)) text = String(amount);
  else if (typeof amount === 'string') text = amount.trim();
  const match = DECIMAL.exec(text);
  if (!match || !(match[2] || match[3])) return null;
  let digits = (match[2] || '') + (match[3] || '');
  // Where the decimal point falls in `digits` once the amount is in minor units.
  let point = (match[2] || '').length + parseInt(match[4] || '0', 10) + minorDigits(currency);
  if (point < 0) {
    digits = '0'.repeat(-point) + digits;
    point = 0;
  }
  if (point > digits.length) digits += '0'.repeat(point - digits.length);
  if (/[1-9]/.test(digits.slice(point))) return null;
  const units = parseInt(digits.slice(0, point) || '0', 10);
  if (!Number.isSafeInteger(units)) return null;
  return match[1] === '-' && units !== 0 ? -units : units;
}
