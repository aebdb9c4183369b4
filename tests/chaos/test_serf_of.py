"""Which Serf belongs to which cluster (chaos.cluster.names_dir): pure, no processes."""
from __future__ import annotations

from chaos.cluster import names_dir


def test_a_data_dir_names_the_paths_inside_it() -> None:
    assert names_dir(b"-config-file=/tmp/fed/k1/serf/serf.json", "/tmp/fed/k1")
    assert names_dir(b"/tmp/fed/k1", "/tmp/fed/k1")
    assert names_dir(b"/tmp/fed/k1/", "/tmp/fed/k1/")


def test_a_longer_sibling_is_not_inside() -> None:
    # k1's directory is a prefix of k10's: the bench summed eleven Serfs as k1's
    assert not names_dir(b"-config-file=/tmp/fed/k10/serf/serf.json", "/tmp/fed/k1")
    assert not names_dir(b"/tmp/fed/k1x", "/tmp/fed/k1")


def test_a_later_occurrence_still_counts() -> None:
    assert names_dir(b"/tmp/fed/k10:/tmp/fed/k1/serf", "/tmp/fed/k1")
