"""ISO 4217 currency codes from pycountry's maintained table."""

from __future__ import annotations

from functools import cache

import pycountry

# ISO 4217 codes that are not money: "no currency" and "testing".
NOT_MONEY = frozenset({"XXX", "XTS"})


@cache
def iso4217_codes() -> frozenset[str]:
    return frozenset(str(c.alpha_3) for c in pycountry.currencies) - NOT_MONEY
