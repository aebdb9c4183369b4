"""peer.drivers.quantity against a Decimal oracle: the integer ratios (no decimal module in the
daemon, issue 18's memory) accept, refuse and round exactly as the Decimal parsing did."""
from __future__ import annotations

import math
import re
from decimal import Decimal, localcontext
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peer.drivers.quantity import QuantityError, cpu_cores, memory_bytes, parse_quantity

_QUANTITY = re.compile(
    r"(?P<num>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]{1,3})?")
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1), "k": Decimal("1e3"),
            "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"), "P": Decimal("1e15"), "E": Decimal("1e18")}


def oracle(value: object) -> Decimal:
    """The Decimal parsing as it was (main before this change)."""
    if isinstance(value, bool):
        raise QuantityError("must be a number or a quantity string, not a boolean")
    if isinstance(value, int):
        if abs(value) > 2**63:
            raise QuantityError("number too large")
        return Decimal(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise QuantityError("must be finite")
        return Decimal(repr(value))
    assert isinstance(value, str)
    if len(value) > 32:
        raise QuantityError("longer than 32 characters")
    match = _QUANTITY.fullmatch(value)
    if match is None:
        raise QuantityError(f"{value!r} is not a quantity (e.g. 500m, 128Mi, 1G, 1e3)")
    number, suffix = Decimal(match["num"]), match["suffix"] or ""
    if suffix in _BINARY:
        return number * _BINARY[suffix]
    if suffix in _DECIMAL:
        return number * _DECIMAL[suffix]
    return number.scaleb(int(suffix[1:]))


def oracle_cpu(value: object, maximum: float) -> float:
    cores = oracle(value)
    if cores < Decimal("0.001"):
        raise QuantityError("must be at least 0.001 cores (1m)")
    if cores > Decimal(repr(maximum)):
        raise QuantityError(f"must be at most {maximum:g} cores")
    return float(cores)


def oracle_memory(value: object, maximum: int) -> int:
    size = oracle(value)
    if size <= 0:
        raise QuantityError("must be more than 0 bytes")
    if size > maximum:
        raise QuantityError(f"must be at most {maximum} bytes")
    return math.ceil(size)


def outcome(fn: object, *args: object) -> tuple[str, object]:
    try:
        return "ok", fn(*args)  # type: ignore[operator]
    except QuantityError as exc:
        return "refused", str(exc)


NUMBER = st.from_regex(r"\A([0-9]{1,6}(\.[0-9]{0,6})?|\.[0-9]{1,6})\Z")
SUFFIX = st.sampled_from(["", *_BINARY, *"numkMGTPE"]) | st.from_regex(r"\A[eE][+-]?[0-9]{1,3}\Z")
QUANTITY = st.builds(lambda n, s: n + s, NUMBER, SUFFIX)
VALUES = (QUANTITY | st.text(max_size=40) | st.integers(-(2**64), 2**64) | st.booleans()
          | st.floats(allow_nan=True, allow_infinity=True) | st.floats(min_value=-10, max_value=1e12))


@settings(max_examples=600)
@given(VALUES, st.sampled_from([64.0, 2.5, 0.5, 1e3]))
def test_cpu_cores_decides_as_the_decimal_parsing(value: object, maximum: float) -> None:
    mine = outcome(lambda v: cpu_cores(v, maximum=maximum), value)
    assert mine == outcome(oracle_cpu, value, maximum)


@settings(max_examples=600)
@given(VALUES, st.sampled_from([2**40, 2**30, 10**9, 1]))
def test_memory_bytes_decides_and_rounds_as_the_decimal_parsing(value: object, maximum: int) -> None:
    mine = outcome(lambda v: memory_bytes(v, maximum=maximum), value)
    assert mine == outcome(oracle_memory, value, maximum)


@given(QUANTITY)
def test_parse_quantity_is_exact(text: str) -> None:
    num, den = parse_quantity(text)
    with localcontext(prec=60):  # the default 28 digits round e.g. "100000.00001Ei" (31 digits)
        exact = Fraction(oracle(text))
    assert den > 0 and Fraction(num, den) == exact


def test_a_quantity_longer_than_28_digits_is_exact() -> None:
    """Found by Hypothesis: the oracle rounded where parse_quantity is exact."""
    num, den = parse_quantity("100000.00001Ei")
    assert Fraction(num, den) == Fraction(10_000_000_001, 100_000) * 2**60


@pytest.mark.parametrize(("text", "ratio"), [("500m", (500, 1000)), ("1.5Gi", (15 * 2**30, 10)), (".5", (5, 10)),
                                             ("5.", (5, 1)), ("1e3", (1000, 1)), ("2E-2", (2, 100)), ("1E", (10**18, 1))])
def test_parse_quantity_ratios(text: str, ratio: tuple[int, int]) -> None:
    assert parse_quantity(text) == ratio
