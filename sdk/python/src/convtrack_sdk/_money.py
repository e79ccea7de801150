"""Money as the server stores it: integer minor units of an ISO 4217 currency.

``revenue`` in major units ("49.99", Decimal("49.99"), 49.99) becomes minor units
exactly, by the currency's exponent, or is refused: no float arithmetic, and no
silent rounding of a fraction the currency does not have.
"""

from __future__ import annotations

import decimal
from decimal import Decimal

from convtrack_sdk._errors import InvalidEvent

# ISO 4217 minor-unit exponents that are not 2 (the table's "E" column), the
# same table the server converts with.
_MINOR_DIGITS = {
    **dict.fromkeys(
        ("BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX",
         "UYI", "VND", "VUV", "XAF", "XOF", "XPF"),
        0,
    ),
    **dict.fromkeys(("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"), 3),
    "CLF": 4,
    "UYW": 4,
}  # fmt: skip
MAX_VALUE = 2**63 - 1
# Enough digits that scaling any amount below MAX_VALUE is exact.
_EXACT = decimal.Context(prec=60, traps=[decimal.InvalidOperation, decimal.Inexact])


def minor_digits(currency: str) -> int:
    """Digits of a currency's minor unit: USD 2, JPY 0, KWD 3."""
    return _MINOR_DIGITS.get(currency, 2)


def normalize_currency(currency: object) -> str:
    """An ISO 4217 code in upper case ("usd" -> "USD"); the server checks the list."""
    if not isinstance(currency, str) or len(currency.strip()) != 3 or not currency.isascii():
        raise InvalidEvent("currency_unknown", f"currency must be an ISO 4217 code: {currency!r}")
    code = currency.strip().upper()
    if not code.isalpha():
        raise InvalidEvent("currency_unknown", f"currency must be an ISO 4217 code: {currency!r}")
    return code


def check_minor_units(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidEvent(
            "value_not_integer_minor_units",
            f"value is an int in minor units (4999 for 49.99 USD); for major units "
            f"pass revenue= instead: {value!r}",
        )
    if value < 0:
        raise InvalidEvent("value_negative", "value must not be negative")
    if value > MAX_VALUE:
        raise InvalidEvent("value_too_large", "value must fit in a signed 64-bit integer")
    return value


def to_minor_units(revenue: Decimal | str | int | float, currency: str) -> int:
    """``revenue`` in major units as exact minor units of ``currency`` (already upper case).

    A float is read by its shortest repr, the digits Python prints for it, so 19.99
    is 1999 cents while 0.1 + 0.2 (0.30000000000000004) is refused as too precise.
    """
    if isinstance(revenue, bool):
        raise InvalidEvent("value_not_number", "revenue must be a number, not a bool")
    try:
        if isinstance(revenue, Decimal):
            amount = revenue
        elif isinstance(revenue, float):
            amount = Decimal(repr(revenue))
        elif isinstance(revenue, int | str):
            amount = Decimal(revenue.strip() if isinstance(revenue, str) else revenue)
        else:
            raise InvalidEvent("value_not_number", f"revenue must be a number: {revenue!r}")
    except decimal.InvalidOperation:
        raise InvalidEvent("value_not_number", f"revenue must be a number: {revenue!r}") from None
    if not amount.is_finite():
        raise InvalidEvent("value_not_number", f"revenue must be finite: {revenue!r}")
    if amount < 0:
        raise InvalidEvent("value_negative", "revenue must not be negative")
    if amount.adjusted() > 19:  # above 10**19 major units: too large in any currency
        raise InvalidEvent("value_too_large", f"revenue is too large: {revenue!r}")
    digits = minor_digits(currency)
    try:
        scaled = amount.scaleb(digits, _EXACT)
        minor = scaled.to_integral_exact(context=_EXACT)
    except decimal.Inexact:
        raise InvalidEvent(
            "value_too_precise",
            f"{revenue} has more decimals than {currency} has ({digits})",
        ) from None
    except decimal.InvalidOperation:
        raise InvalidEvent("value_too_large", f"revenue is too large: {revenue!r}") from None
    return check_minor_units(int(minor))
