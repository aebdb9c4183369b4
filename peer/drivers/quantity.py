"""Kubernetes resource quantities ("500m", "128Mi", "1e3") parsed exactly, with bounds.

Kubernetes writes CPU and memory as quantities; roam accepts the same syntax so a descriptor
means the same thing to both drivers. A value is kept exact as a ratio of two integers
(`Ratio`), read from a length-bounded string whose exponent has at most three digits, so
"1e999999" is refused by the pattern instead of being expanded. Integers rather than
`Decimal`: the decimal module (which statistics and fractions import too) costs the daemon
about 0.5 MB of RSS, for nothing else (issue 18's memory).
"""
from __future__ import annotations

import math
import re

from peer.errors import InvalidKind

# <number><suffix>, as in k8s.io/apimachinery/pkg/api/resource (signs are refused: roam has
# no use for negative resources).
_QUANTITY = re.compile(
    r"(?P<num>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
    r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]{1,3})?"
)
# What repr() writes for a finite float: "0.1", "100.0", "1e-05", "1.5e+20" (the sign apart).
_FLOAT_REPR = re.compile(r"(?P<num>[0-9]+(?:\.[0-9]*)?)(?:e(?P<exp>[+-]?[0-9]+))?")
_MAX_TEXT = 32

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}

#: An exact amount: (numerator, denominator), the denominator positive.
Ratio = tuple[int, int]


class QuantityError(InvalidKind, ValueError):
    """Not a quantity, or outside the allowed range."""


def _decimal(digits: str, exponent: int) -> Ratio:
    """The exact value of decimal `digits` ("12", "1.5", ".5", "5.") times 10**exponent."""
    whole, _, frac = digits.partition(".")
    num, den = int(whole + frac), 10 ** len(frac)
    return (num * 10**exponent, den) if exponent >= 0 else (num, den * 10**-exponent)


def parse_quantity(text: str) -> Ratio:
    """Exact value of a Kubernetes quantity string."""
    if len(text) > _MAX_TEXT:
        raise QuantityError(f"longer than {_MAX_TEXT} characters")
    match = _QUANTITY.fullmatch(text)
    if match is None:
        raise QuantityError(f"{text!r} is not a quantity (e.g. 500m, 128Mi, 1G, 1e3)")
    suffix = match["suffix"] or ""
    if suffix in _BINARY:
        num, den = _decimal(match["num"], 0)
        return num * _BINARY[suffix], den
    return _decimal(match["num"], _DECIMAL[suffix] if suffix in _DECIMAL else int(suffix[1:]))


def _float(value: float) -> Ratio:
    """The exact value of the decimal that repr() writes for a finite float (0.1 is 1/10)."""
    match = _FLOAT_REPR.fullmatch(repr(abs(value)))
    if match is None:  # pragma: no cover - repr of a finite float always matches
        raise QuantityError(f"{value!r} is not a number")
    num, den = _decimal(match["num"], int(match["exp"] or 0))
    return (-num if value < 0 else num), den


def _as_ratio(value: object) -> Ratio:
    """A JSON number or a quantity string, exactly; anything else is refused."""
    if isinstance(value, bool):
        raise QuantityError("must be a number or a quantity string, not a boolean")
    if isinstance(value, int):
        if abs(value) > 2**63:
            raise QuantityError("number too large")
        return value, 1
    if isinstance(value, float):
        if not math.isfinite(value):
            raise QuantityError("must be finite")
        return _float(value)
    if isinstance(value, str):
        return parse_quantity(value)
    raise QuantityError(f"must be a number or a quantity string, not {type(value).__name__}")


def cpu_cores(value: object, *, maximum: float) -> float:
    """CPU as cores: 0.5, "500m", "2". At least one millicore (the Kubernetes resolution)."""
    num, den = _as_ratio(value)
    if num * 1000 < den:
        raise QuantityError("must be at least 0.001 cores (1m)")
    top, top_den = _float(float(maximum))
    if num * top_den > top * den:
        raise QuantityError(f"must be at most {maximum:g} cores")
    return num / den  # int / int is correctly rounded, as float(Decimal) was


def memory_bytes(value: object, *, maximum: int) -> int:
    """Memory as bytes, rounded up as Kubernetes does: "128Mi", "1G", "1e3", 1048576."""
    num, den = _as_ratio(value)
    if num <= 0:
        raise QuantityError("must be more than 0 bytes")
    if num > maximum * den:
        raise QuantityError(f"must be at most {maximum} bytes")
    return -(-num // den)


def millicores(cores: float) -> str:
    """The Kubernetes spelling of a CPU amount, e.g. 0.5 -> "500m"."""
    return f"{max(1, round(cores * 1000))}m"
