"""The agent's Prometheus metrics without prometheus_client (issue 18: an idle agent's memory).

The agent uses a small part of prometheus_client: counters, gauges and one histogram, with
labels, on a registry of its own, rendered as the text exposition format (0.0.4) at /metrics.
Importing prometheus_client costs the daemon about 1.1 MB of RSS, most of it for what roam
does not use (its HTTP, WSGI and push-gateway exposition servers, multiprocess mode, the
process and platform collectors). This module renders the same text, line for line:
`tests/idle/test_promtext.py` checks it against prometheus_client on the same operations,
`_created` series included. Single-threaded by design: the agent updates metrics from its
event loop only.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

INF = float("inf")


def go_float(value: float) -> str:
    """A float as Prometheus (Go) writes it: prometheus_client's `floatToGoString`."""
    d = float(value)
    if d == INF:
        return "+Inf"
    if d == -INF:
        return "-Inf"
    if math.isnan(d):
        return "NaN"
    s = repr(d)
    dot = s.find(".")
    if d > 0 and dot > 6:  # Go switches to an exponent sooner than Python
        mantissa = f"{s[0]}.{s[1:dot]}{s[dot + 1:]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return s


def _label_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _labels(pairs: Sequence[tuple[str, str]]) -> str:
    if not pairs:
        return ""
    return "{" + ",".join(f'{k}="{_label_value(v)}"' for k, v in pairs) + "}"


class _Child:
    def __init__(self, clock: Callable[[], float]) -> None:
        self.value = 0.0
        self.created = clock()


class CounterChild(_Child):
    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("counters can only be incremented by non-negative amounts")
        self.value += amount


class GaugeChild(_Child):
    def set(self, value: float) -> None:
        self.value = float(value)

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class HistogramChild(_Child):
    def __init__(self, clock: Callable[[], float], buckets: Sequence[float]) -> None:
        super().__init__(clock)
        self.bounds = list(buckets)
        self.counts = [0.0] * len(self.bounds)

    def observe(self, amount: float) -> None:
        self.value += amount  # the sum
        for i, bound in enumerate(self.bounds):
            if amount <= bound:
                self.counts[i] += 1.0
                break


C = TypeVar("C", bound=_Child)


class _Metric(Generic[C]):
    kind = ""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = (), *,
                 registry: Registry, clock: Callable[[], float] = time.time) -> None:
        self.name, self.doc, self.labelnames, self.clock = name, documentation, tuple(labelnames), clock
        self._children: dict[tuple[str, ...], C] = {}
        if not self.labelnames:
            self._children[()] = self._child()
        registry.register(self)

    def _child(self) -> C:
        raise NotImplementedError

    def labels(self, **values: str) -> C:
        if set(values) != set(self.labelnames):
            raise ValueError(f"{self.name}: labels {sorted(values)} are not {sorted(self.labelnames)}")
        key = tuple(str(values[n]) for n in self.labelnames)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._child()
        return child

    def _only(self) -> C:
        if self.labelnames:
            raise ValueError(f"{self.name} has labels {list(self.labelnames)}: use .labels()")
        return self._children[()]

    def _head(self, name: str, kind: str) -> list[str]:
        doc = self.doc.replace("\\", r"\\").replace("\n", r"\n")
        return [f"# HELP {name} {doc}", f"# TYPE {name} {kind}"]

    def render(self) -> list[str]:
        raise NotImplementedError


class Counter(_Metric[CounterChild]):
    def _child(self) -> CounterChild:
        return CounterChild(self.clock)

    def inc(self, amount: float = 1.0) -> None:
        self._only().inc(amount)

    def render(self) -> list[str]:
        base = self.name[:-len("_total")] if self.name.endswith("_total") else self.name
        lines = self._head(f"{base}_total", "counter")
        items = [(list(zip(self.labelnames, key)), child) for key, child in self._children.items()]
        lines += [f"{base}_total{_labels(pairs)} {go_float(child.value)}" for pairs, child in items]
        if items:
            lines += self._head(f"{base}_created", "gauge")
            lines += [f"{base}_created{_labels(pairs)} {go_float(child.created)}" for pairs, child in items]
        return lines


class Gauge(_Metric[GaugeChild]):
    def _child(self) -> GaugeChild:
        return GaugeChild(self.clock)

    def set(self, value: float) -> None:
        self._only().set(value)

    def render(self) -> list[str]:
        lines = self._head(self.name, "gauge")
        for key, child in self._children.items():
            lines.append(f"{self.name}{_labels(list(zip(self.labelnames, key)))} {go_float(child.value)}")
        return lines


class Histogram(_Metric[HistogramChild]):
    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = (), *,
                 buckets: Sequence[float], registry: Registry, clock: Callable[[], float] = time.time) -> None:
        bounds = sorted(float(b) for b in buckets)
        self.buckets = bounds if bounds and bounds[-1] == INF else [*bounds, INF]
        super().__init__(name, documentation, labelnames, registry=registry, clock=clock)

    def _child(self) -> HistogramChild:
        return HistogramChild(self.clock, self.buckets)

    def observe(self, amount: float) -> None:
        self._only().observe(amount)

    def render(self) -> list[str]:
        lines = self._head(self.name, "histogram")
        created = []
        for key, child in self._children.items():
            pairs = list(zip(self.labelnames, key))
            total = 0.0
            for bound, count in zip(child.bounds, child.counts):
                total += count
                lines.append(f"{self.name}_bucket{_labels([('le', go_float(bound)), *pairs])} {go_float(total)}")
            lines.append(f"{self.name}_count{_labels(pairs)} {go_float(total)}")
            lines.append(f"{self.name}_sum{_labels(pairs)} {go_float(child.value)}")
            created.append(f"{self.name}_created{_labels(pairs)} {go_float(child.created)}")
        if created:
            lines += self._head(f"{self.name}_created", "gauge") + created
        return lines


class Registry:
    """The metrics of one agent, rendered in registration order."""

    def __init__(self) -> None:
        self._metrics: list[_Metric[Any]] = []

    def register(self, metric: _Metric[Any]) -> None:
        if any(m.name == metric.name for m in self._metrics):
            raise ValueError(f"duplicate metric {metric.name}")
        self._metrics.append(metric)

    def render(self) -> bytes:
        lines = [line for metric in self._metrics for line in metric.render()]
        return ("\n".join(lines) + "\n").encode("utf-8") if lines else b""
