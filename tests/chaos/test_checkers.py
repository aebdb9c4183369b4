"""Checkers over hand-built snapshots: each invariant passes on a healthy federation and
names the culprit when broken."""
from __future__ import annotations

import copy
from typing import Any

from chaos.checkers import (
    every_service_exists_and_serves, exactly_one_copy, members_alive, no_loss_during,
    nothing_left_behind, records_agree,
)
from chaos.leftovers import Leftovers
from chaos.load import Sample


def rec(name: str, home: str, location: str, role: str, *, state: str = "running",
        vclock: dict[str, int] | None = None) -> dict[str, Any]:
    return {"name": name, "home": home, "location": location, "role": role, "state": state,
            "endpoint": f"10.77.0.10:{30000 + len(name)}", "vclock": vclock or {home: 1}}


def healthy() -> dict[str, dict[str, Any]]:
    """web: homed on a, migrated to b. db: homed on c, at home. a has a tombstone of old."""
    alive = [{"name": c, "status": "alive"} for c in "abc"]
    return {
        "a": {"services": [rec("web", "a", "b", "AR", vclock={"a": 2, "b": 1}),
                           rec("old", "a", "a", "LR", state="deleted", vclock={"a": 3})],
              "members": alive},
        "b": {"services": [rec("web", "a", "b", "FR", vclock={"b": 1, "a": 2})],
              "members": alive},
        "c": {"services": [rec("db", "c", "c", "LR")], "members": alive},
    }


def test_records_agree_on_a_healthy_federation() -> None:
    result = records_agree(healthy())
    assert result.ok, result.detail
    assert result.name == "records_agree"


def test_records_agree_catches_each_kind_of_disagreement() -> None:
    snap = healthy()
    snap["b"]["services"][0]["vclock"] = {"a": 1, "b": 1}
    result = records_agree(snap)
    assert not result.ok and "web: records differ" in result.detail

    snap = healthy()
    snap["b"]["services"] = []  # the AC forgot the FR
    result = records_agree(snap)
    assert not result.ok and "web: b keeps no record" in result.detail

    snap = healthy()
    snap["c"]["services"].append(rec("web", "a", "b", "FR", vclock={"a": 2, "b": 1}))
    result = records_agree(snap)
    assert not result.ok and "kept by ['c']" in result.detail

    snap = healthy()
    snap["a"]["services"][0]["role"] = "LR"
    result = records_agree(snap)
    assert not result.ok and "role LR at a, want AR" in result.detail
    assert records_agree(snap, check_roles=False).ok

    snap = healthy()
    del snap["b"]
    result = records_agree(snap)
    assert not result.ok and "no snapshot from b" in result.detail

    snap = healthy()
    snap["c"]["services"].append(copy.deepcopy(snap["c"]["services"][0]))
    result = records_agree(snap)
    assert not result.ok and "c: several records for ['db']" in result.detail


def test_every_service_exists_and_serves() -> None:
    snap = healthy()
    probes = {"web": True, "db": True}
    assert every_service_exists_and_serves(snap, probes).ok
    result = every_service_exists_and_serves(snap, {"web": True, "db": False})
    assert not result.ok and result.detail == "db: HC endpoint does not serve"
    result = every_service_exists_and_serves(snap, probes, expected=["web", "db", "old"])
    assert not result.ok and "old: no live record anywhere" in result.detail
    snap["a"]["services"] = snap["a"]["services"][1:]  # the HC lost web's record
    result = every_service_exists_and_serves(snap, probes)
    assert not result.ok and "web: HC a keeps no live record" in result.detail


def test_exactly_one_copy() -> None:
    assert exactly_one_copy({"a": [], "b": ["web"], "c": ["db"]}).ok
    result = exactly_one_copy({"a": ["web"], "b": ["web"], "c": ["db"]})
    assert not result.ok and result.detail == "web: 2 copies ['a', 'b']"
    result = exactly_one_copy({"a": [], "b": ["web"]}, expected=["web", "db"])
    assert not result.ok and result.detail == "db: 0 copies []"


def test_members_alive() -> None:
    assert members_alive(healthy(), "abc").ok
    snap = healthy()
    snap["c"]["members"] = [{"name": "a", "status": "alive"}, {"name": "b", "status": "failed"},
                            {"name": "c", "status": "alive"}]
    result = members_alive(snap, "abc")
    assert not result.ok and result.detail == "c sees {'b': 'failed'}"


def test_no_loss_during() -> None:
    samples = [Sample(t / 10, 1.0, t != 25, 200, None, None) for t in range(50)]
    assert no_loss_during(samples, {"m1": (0.0, 2.0), "m2": (3.0, 4.0)}).ok
    result = no_loss_during(samples, {"m1": (2.0, 3.0)})
    assert not result.ok and result.detail.startswith("m1: 1/11 lost")
    result = no_loss_during(samples, {"late": (9.0, 10.0)})
    assert not result.ok and "no requests sent" in result.detail


def test_nothing_left_behind() -> None:
    assert nothing_left_behind(Leftovers().as_dict()).ok
    result = nothing_left_behind(Leftovers(namespaces=["roam-a"]).as_dict())
    assert not result.ok and result.detail == "namespaces: ['roam-a']"
