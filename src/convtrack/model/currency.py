"""ISO 4217 currency codes from pycountry's maintained table."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal
from functools import cache

import pycountry

# ISO 4217 also lists codes that are not money: "no currency is involved" and
# "reserved for testing purposes". They are recognized by their names.
_NOT_MONEY_NAMES = ("no currency", "testing")


@cache
def iso4217_codes() -> frozenset[str]:
    return frozenset(
        str(c.alpha_3)
        for c in pycountry.currencies
        if not any(marker in str(c.name).lower() for marker in _NOT_MONEY_NAMES)
    )


# ISO 4217 minor-unit exponents that are not 2 (the table's "E" column).
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


def minor_digits(code: str) -> int:
    """How many digits a currency's minor unit has (USD 2, JPY 0, KWD 3)."""
    return _MINOR_DIGITS.get(code, 2)


def major_amount(value: int, code: str) -> str:
    """``value`` minor units as an exact decimal string in major units: 4999 USD -> "49.99"."""
    digits = minor_digits(code)
    if digits == 0:
        return str(value)
    sign = "-" if value < 0 else ""
    whole, frac = divmod(abs(value), 10**digits)
    return f"{sign}{whole}.{frac:0{digits}d}"


def format_money(minor: int | float, code: str) -> str:
    """An amount in minor units as people read it, in major units by the currency's
    ISO 4217 exponent: 4999 USD -> "USD 49.99", 5000 JPY -> "JPY 5000", 1234 KWD ->
    "KWD 1.234". A fractional amount (an attribution credit's share) is rounded half
    to even to the currency's digits; integers are exact at any size. For display
    only: JSON answers keep integer minor units."""
    digits = minor_digits(code)
    amount = Decimal(minor) if isinstance(minor, int) else Decimal(repr(minor))
    major = amount.scaleb(-digits).quantize(Decimal(1).scaleb(-digits), ROUND_HALF_EVEN)
    if major.is_zero():
        major = major.copy_abs()  # a credit that rounds to nothing is not "-0.00"
    return f"{code} {major:f}"
