"""ISO 4217 currency codes from pycountry's maintained table."""

from __future__ import annotations

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
