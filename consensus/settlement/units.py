"""Amounts typed by people, to integer wei, exactly (no floats anywhere near money)."""

from __future__ import annotations

from consensus.errors import Invalid

UNITS = {"wei": 0, "gwei": 9, "eth": 18}


def parse_wei(text: str, what: str = "amount") -> int:
    """``"1500"``, ``"1500wei"``, ``"2.5gwei"``, ``"0.01eth"`` -> wei.

    Raises:
        Invalid: not a non-negative decimal with a known unit, or finer than one wei.
    """
    raw = text.strip().lower().replace("_", "")
    unit = next((u for u in sorted(UNITS, key=len, reverse=True) if raw.endswith(u)), "wei")
    number = raw[: len(raw) - len(unit)] if raw.endswith(unit) else raw
    whole, _, frac = number.partition(".")
    if not whole.isdigit() or (frac and not frac.isdigit()):
        raise Invalid(what, f"{text!r} is not an amount such as 1500, 2.5gwei or 0.01eth")
    decimals = UNITS[unit]
    if len(frac.rstrip("0")) > decimals:
        hint = f" (a number without a unit is wei: {text.strip()}eth?)" if unit == "wei" else ""
        raise Invalid(what, f"{text!r} is finer than one wei{hint}")
    fraction = int(frac.ljust(decimals, "0")[:decimals] or "0")
    return int(whole) * int(10**decimals) + fraction


def parse_units(text: str, what: str = "amount", *, token: bool) -> int:
    """An amount of the deployment's payment asset: coin as :func:`parse_wei` reads it; a
    token only as an integer of its base units.

    Why: token decimals vary (USDC has 6), so ``1eth`` of a token would be 10**18 base units,
    a trillion USDC; refusing the units is safer than guessing what was meant.

    Raises:
        Invalid: not an amount of that asset.
    """
    if not token:
        return parse_wei(text, what)
    raw = text.strip().replace("_", "")
    if not raw.isdigit():
        raise Invalid(what, f"{text!r}: this deployment pays in a token; give an integer of its "
                            "base units (eth and gwei are native-coin units)")  # fmt: skip
    return int(raw)


def format_wei(wei: int, unit: str = "eth") -> str:
    """``1500000000000000000`` -> ``"1.5 ETH"``; with ``unit="gwei"``, ``2500000000`` ->
    ``"2.5 gwei"``. Exact, trailing zeros dropped."""
    decimals = UNITS[unit]
    whole, frac = divmod(abs(wei), 10**decimals)
    sign = "-" if wei < 0 else ""
    tail = f".{frac:0{decimals}d}".rstrip("0") if frac else ""
    return f"{sign}{whole}{tail} {'ETH' if unit == 'eth' else unit}"


def format_rate(wei_per_s: int, token: str | None) -> str:
    """A price per second as people read it: gwei of the native coin, or a token's base
    units (whose decimals we do not know, so they are not scaled)."""
    return f"{wei_per_s} units/s" if token else f"{format_wei(wei_per_s, 'gwei')}/s"
