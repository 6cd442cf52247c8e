"""Amounts typed by people: coin with its units, a token in base units only."""

from __future__ import annotations

import pytest

from consensus.errors import Invalid
from consensus.settlement.units import format_rate, format_wei, parse_units, parse_wei


@pytest.mark.parametrize(
    ("text", "wei"),
    [("1500", 1500), ("1500wei", 1500), ("2.5gwei", 2_500_000_000), ("0.01ETH", 10**16),
     ("1_000", 1000), ("1.000000000000000001eth", 10**18 + 1)],
)  # fmt: skip
def test_coin_amounts_are_exact(text: str, wei: int) -> None:
    assert parse_wei(text) == wei == parse_units(text, token=False)


@pytest.mark.parametrize(
    ("text", "why"),
    [("1.5", "finer than one wei"), ("-1", "not an amount"), ("1e18", "not an amount"),
     ("", "not an amount")],
)  # fmt: skip
def test_bad_coin_amounts_say_why(text: str, why: str) -> None:
    with pytest.raises(Invalid, match=why):
        parse_wei(text, "AMOUNT")


def test_a_token_takes_integer_base_units_only() -> None:
    assert parse_units("2_500_000", token=True) == 2_500_000
    for text in ("1eth", "2.5gwei", "1500wei", "1.5"):
        with pytest.raises(Invalid, match="base units") as caught:
            parse_units(text, "AMOUNT", token=True)
        assert caught.value.what == "AMOUNT"


def test_format_is_exact() -> None:
    assert format_wei(1_500_000_000_000_000_001) == "1.500000000000000001 ETH"
    assert format_wei(-(10**18)) == "-1 ETH"
    assert format_wei(2_500_000_000, "gwei") == "2.5 gwei"
    assert format_wei(100 * 10**9, "gwei") == "100 gwei"
    assert format_wei(1, "gwei") == "0.000000001 gwei"


def test_prices_per_second_read_in_gwei_or_token_units() -> None:
    assert format_rate(150 * 10**9, None) == "150 gwei/s"
    assert format_rate(1_000_001, "0xToken") == "1000001 units/s"
