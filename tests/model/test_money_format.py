"""format_money: minor units to what people read, by the currency's ISO 4217 exponent."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from convtrack.model.currency import format_money, iso4217_codes, minor_digits


@pytest.mark.parametrize(
    ("minor", "code", "shown"),
    [
        (4999, "USD", "USD 49.99"),  # exponent 2
        (5000, "JPY", "JPY 5000"),  # exponent 0
        (1234, "KWD", "KWD 1.234"),  # exponent 3
        (5, "CLF", "CLF 0.0005"),  # exponent 4
        (0, "USD", "USD 0.00"),
        (7, "EUR", "EUR 0.07"),
        (-4999, "USD", "USD -49.99"),
        (-1, "KWD", "KWD -0.001"),
        (-5000, "JPY", "JPY -5000"),
        (10**12, "USD", "USD 10000000000.00"),
        (2**63 - 1, "USD", "USD 92233720368547758.07"),  # the largest total: exact
        (-(2**63), "BHD", "BHD -9223372036854775.808"),
        (1999.6, "USD", "USD 20.00"),  # an attribution credit: rounded to the digits
        (333.33, "USD", "USD 3.33"),
        (0.5, "JPY", "JPY 0"),  # half to even
        (1.5, "JPY", "JPY 2"),
        (-0.4, "USD", "USD 0.00"),  # never "-0.00"
    ],
)
def test_major_units_by_exponent(minor: int | float, code: str, shown: str) -> None:
    assert format_money(minor, code) == shown


@given(st.sampled_from(sorted(iso4217_codes())), st.integers(-(2**70), 2**70))
def test_integers_round_trip_exactly(code: str, minor: int) -> None:
    prefix, amount = format_money(minor, code).split(" ")
    assert prefix == code
    digits = minor_digits(code)
    assert len(amount.partition(".")[2]) == digits
    assert Decimal(amount).scaleb(digits) == minor
