"""Kubernetes resource quantities ("500m", "128Mi", "1e3") parsed exactly, with bounds.

Kubernetes writes CPU and memory as quantities; roam accepts the same syntax so a descriptor
means the same thing to both drivers. Parsing goes through `Decimal` on a length-bounded
string, so "1e999999" is refused by comparison instead of being expanded.
"""
from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation

from peer.errors import InvalidKind

# <number><suffix>, as in k8s.io/apimachinery/pkg/api/resource (signs are refused: roam has
# no use for negative resources).
_QUANTITY = re.compile(
    r"(?P<num>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
    r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]{1,3})?"
)
_MAX_TEXT = 32

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
    "k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"),
    "P": Decimal("1e15"), "E": Decimal("1e18"),
}


class QuantityError(InvalidKind, ValueError):
    """Not a quantity, or outside the allowed range."""


def parse_quantity(text: str) -> Decimal:
    """Exact value of a Kubernetes quantity string."""
    if len(text) > _MAX_TEXT:
        raise QuantityError(f"longer than {_MAX_TEXT} characters")
    match = _QUANTITY.fullmatch(text)
    if match is None:
        raise QuantityError(f"{text!r} is not a quantity (e.g. 500m, 128Mi, 1G, 1e3)")
    try:
        number = Decimal(match["num"])
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only decimals
        raise QuantityError(f"{text!r} is not a number") from exc
    suffix = match["suffix"] or ""
    if suffix in _BINARY:
        return number * _BINARY[suffix]
    if suffix in _DECIMAL:
        return number * _DECIMAL[suffix]
    return number.scaleb(int(suffix[1:]))


def _as_decimal(value: object) -> Decimal:
    """A JSON number or a quantity string as a Decimal; anything else is refused."""
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
    if isinstance(value, str):
        return parse_quantity(value)
    raise QuantityError(f"must be a number or a quantity string, not {type(value).__name__}")


def cpu_cores(value: object, *, maximum: float) -> float:
    """CPU as cores: 0.5, "500m", "2". At least one millicore (the Kubernetes resolution)."""
    cores = _as_decimal(value)
    if cores < Decimal("0.001"):
        raise QuantityError("must be at least 0.001 cores (1m)")
    if cores > Decimal(repr(maximum)):
        raise QuantityError(f"must be at most {maximum:g} cores")
    return float(cores)


def memory_bytes(value: object, *, maximum: int) -> int:
    """Memory as bytes, rounded up as Kubernetes does: "128Mi", "1G", "1e3", 1048576."""
    size = _as_decimal(value)
    if size <= 0:
        raise QuantityError("must be more than 0 bytes")
    if size > maximum:
        raise QuantityError(f"must be at most {maximum} bytes")
    return math.ceil(size)


def millicores(cores: float) -> str:
    """The Kubernetes spelling of a CPU amount, e.g. 0.5 -> "500m"."""
    return f"{max(1, round(cores * 1000))}m"
