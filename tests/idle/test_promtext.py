"""peer.runtime.promtext renders what prometheus_client renders, on the same operations (the agent
dropped prometheus_client to save memory; its /metrics text must not change)."""
from __future__ import annotations

import re

import prometheus_client as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peer.runtime import promtext
from peer.runtime.metrics import Metrics

CREATED = re.compile(r"^(\S+_created(?:\{.*\})?) \S+$")
BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

label = st.text(alphabet=st.sampled_from('ab"\\\n-é'), min_size=0, max_size=4)
amount = st.floats(min_value=0, max_value=1e12, allow_nan=False) | st.integers(0, 10**8).map(float)
op = st.one_of(
    st.tuples(st.just("counter"), label, amount),
    st.tuples(st.just("plain"), st.just(""), amount),
    st.tuples(st.just("gauge"), label, st.floats(allow_nan=False, allow_infinity=True)),
    st.tuples(st.just("histogram"), label, st.floats(min_value=0, max_value=100, allow_nan=False)),
)


def _without_created_times(text: str) -> list[str]:
    """The `_created` samples carry each implementation's own clock reading: keep the series."""
    return [m.group(1) + " T" if (m := CREATED.match(line)) else line for line in text.splitlines()]


def _apply(ops: list[tuple[str, str, float]], lib: object, registry: object) -> bytes:
    Counter, Gauge, Histogram = lib.Counter, lib.Gauge, lib.Histogram  # type: ignore[attr-defined]
    counter = Counter("roam_c_total", 'labelled "counter" \\ doc\nline', ["kind"], registry=registry)
    plain = Counter("roam_plain_total", "no labels", registry=registry)
    gauge = Gauge("roam_g", "gauge", ["status"], registry=registry)
    hist = Histogram("roam_h_seconds", "histogram", ["stage"], buckets=BUCKETS, registry=registry)
    Counter("roam_never_total", "never used", ["peer"], registry=registry)
    for kind, name, value in ops:
        if kind == "counter":
            counter.labels(kind=name).inc(value)
        elif kind == "plain":
            plain.inc(value)
        elif kind == "gauge":
            gauge.labels(status=name).set(value)
        else:
            hist.labels(stage=name).observe(value)
    if lib is pc:
        return pc.generate_latest(registry)  # type: ignore[arg-type]
    assert isinstance(registry, promtext.Registry)
    return registry.render()


@settings(max_examples=200, deadline=None)
@given(st.lists(op, max_size=30))
def test_same_text_as_prometheus_client(ops: list[tuple[str, str, float]]) -> None:
    ours = _apply(ops, promtext, promtext.Registry()).decode()
    theirs = _apply(ops, pc, pc.CollectorRegistry()).decode()
    assert _without_created_times(ours) == _without_created_times(theirs)


@pytest.mark.parametrize("value", [0.0, 1.0, 3.5, 1e6, 1234567.0, 1.7966e9, 1e-7, -2.0, float("inf"), float("-inf")])
def test_go_float_matches(value: float) -> None:
    from prometheus_client.utils import floatToGoString

    assert promtext.go_float(value) == floatToGoString(value)


def test_bad_use_is_refused() -> None:
    registry = promtext.Registry()
    counter = promtext.Counter("roam_x_total", "x", ["peer"], registry=registry)
    with pytest.raises(ValueError):
        counter.labels(other="a")
    with pytest.raises(ValueError):
        counter.inc()  # labelled: .labels() first
    with pytest.raises(ValueError):
        counter.labels(peer="a").inc(-1)
    with pytest.raises(ValueError):
        promtext.Counter("roam_x_total", "again", registry=registry)


def test_the_agent_metrics_render_and_import_no_prometheus_client() -> None:
    m = Metrics("c1")
    m.members.labels(status="failed").set(1)
    m.gossip_events.labels(type="member-join").inc()
    text = m.render().decode()
    assert 'roam_members{status="failed"} 1.0' in text
    assert 'roam_gossip_events_total{type="member-join"} 1.0' in text
    assert 'roam_agent_info{cluster="c1"} 1.0' in text
