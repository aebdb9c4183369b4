"""Invariant checkers: pure functions over snapshots, so each can be unit-tested with dicts.

A snapshot is what the admin API of every reachable peer returned, keyed by cluster:
`{cluster: {"services": [record, ...], "members": [member, ...]}}` with records as
`GET /v1/services` returns them (`name, home, location, role, state, endpoint, vclock`).
`running` is `{cluster: [service names actually running there]}`, from the orchestrators
rather than from records. Each checker returns a `CheckResult`; none raises on a violation.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from chaos.load import Sample

Record = Mapping[str, Any]
Snapshot = Mapping[str, Mapping[str, Any]]
TOMBSTONE_STATES = frozenset({"deleted", "tombstone"})
AGREED_FIELDS = ("home", "homes", "location", "state", "vclock", "standbys")


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str


def _result(name: str, problems: Sequence[str], fine: str) -> CheckResult:
    return CheckResult(name, not problems, "; ".join(problems) if problems else fine)


def no_loss_during(samples: Iterable[Sample],
                   windows: Mapping[str, tuple[float, float]]) -> CheckResult:
    """No request sent inside any named window [t0, t1] failed, and each window saw load
    (a window without samples proves nothing)."""
    samples = list(samples)
    problems = []
    for label, (t0, t1) in windows.items():
        inside = [s for s in samples if t0 <= s.sent_at <= t1]
        failed = [s for s in inside if not s.ok]
        if not inside:
            problems.append(f"{label}: no requests sent in window")
        elif failed:
            errors = sorted({s.error or f"HTTP {s.status}" for s in failed})
            problems.append(f"{label}: {len(failed)}/{len(inside)} lost ({', '.join(errors)})")
    return _result("no_loss_during", problems, f"{len(windows)} windows, nothing lost")


def live_records(snapshot: Snapshot, *,
                 tombstones: frozenset[str] = TOMBSTONE_STATES) -> dict[str, dict[str, Record]]:
    """{service: {cluster: record}} over records that are not tombstones."""
    out: dict[str, dict[str, Record]] = {}
    for cluster, view in snapshot.items():
        for rec in view.get("services", []):
            if rec.get("state") not in tombstones:
                out.setdefault(rec["name"], {})[cluster] = rec
    return out


def every_service_exists_and_serves(
    snapshot: Snapshot,
    probe_results: Mapping[str, bool],
    *,
    expected: Iterable[str] | None = None,
    tombstones: frozenset[str] = TOMBSTONE_STATES,
) -> CheckResult:
    """Each service (`expected`, or every one with a live record) has a live record on its
    HC, and a probe of its HC endpoint succeeded."""
    records = live_records(snapshot, tombstones=tombstones)
    names = sorted(set(expected) if expected is not None else set(records))
    problems = []
    for name in names:
        held = records.get(name, {})
        homes = {rec.get("home") for rec in held.values()}
        if not held:
            problems.append(f"{name}: no live record anywhere")
        elif len(homes) != 1:
            problems.append(f"{name}: records disagree on home {sorted(map(str, homes))}")
        elif (home := homes.pop()) not in held:
            problems.append(f"{name}: HC {home} keeps no live record")
        if not probe_results.get(name, False):
            problems.append(f"{name}: HC endpoint does not serve")
    return _result("every_service_exists_and_serves", problems,
                   f"{len(names)} services exist and serve")


def exactly_one_copy(running: Mapping[str, Iterable[str]], *,
                     expected: Iterable[str] | None = None,
                     standbys: Mapping[str, Iterable[str]] | None = None) -> CheckResult:
    """Every service runs exactly once across all clusters (each `expected` one at least),
    beside exactly the warm copies its records list (`standbys`: service -> clusters)."""
    where: dict[str, list[str]] = {name: [] for name in expected or ()}
    for cluster, names in running.items():
        for name in names:
            where.setdefault(name, []).append(cluster)
    problems = []
    for name, places in sorted(where.items()):
        warm = set((standbys or {}).get(name, ()))
        primaries = [p for p in places if p not in warm]
        if len(primaries) != 1 or not warm <= set(places):
            problems.append(f"{name}: {len(places)} copies {sorted(places)}"
                            + (f", standbys {sorted(warm)}" if warm else ""))
    return _result("exactly_one_copy", problems, f"{len(where)} services, one copy each (and their standbys)")


def standby_clusters(snapshot: Snapshot, *,
                     tombstones: frozenset[str] = TOMBSTONE_STATES) -> dict[str, set[str]]:
    """{service: clusters its live records list as standby holders} (issue 15)."""
    out: dict[str, set[str]] = {}
    for name, held in live_records(snapshot, tombstones=tombstones).items():
        for rec in held.values():
            out.setdefault(name, set()).update(str(c) for c in rec.get("standbys") or [])
    return out


def _expected_role(cluster: str, entries: Iterable[str], location: str, standbys: Iterable[str] = ()) -> str:
    if cluster in entries:
        return "LR" if location == cluster else "AR"
    if cluster != location and cluster in standbys:
        return "SR"
    return "FR"


def records_agree(snapshot: Snapshot, *, check_roles: bool = True,
                  tombstones: frozenset[str] = TOMBSTONE_STATES) -> CheckResult:
    """Every peer keeping a live record of a service holds the same home set, location, state
    and vclock; exactly the entries of the home set (the HC of paper II-B, replicated) and the
    current location keep one; roles are LR at an entry running it, AR at an entry whose
    service is abroad, FR at the AC."""
    problems = []
    for cluster, view in snapshot.items():
        names = [r["name"] for r in view.get("services", [])]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            problems.append(f"{cluster}: several records for {dupes}")
    records = live_records(snapshot, tombstones=tombstones)
    for name, held in sorted(records.items()):
        versions = {cluster: tuple(_canon(rec.get(f)) for f in AGREED_FIELDS)
                    for cluster, rec in held.items()}
        if len(set(versions.values())) > 1:
            problems.append(f"{name}: records differ: " + "; ".join(
                f"{c}={dict(zip(AGREED_FIELDS, v))}" for c, v in sorted(versions.items())))
            continue
        rec = next(iter(held.values()))
        home, location = rec.get("home"), rec.get("location")
        entries = [str(e) for e in (rec.get("homes") or [home])]
        standbys = [str(c) for c in rec.get("standbys") or []]
        keepers = {*entries, location, *standbys}
        for cluster in sorted(str(k) for k in keepers):
            if cluster not in snapshot:
                problems.append(f"{name}: no snapshot from {cluster}")
            elif cluster not in held:
                problems.append(f"{name}: {cluster} keeps no record")
        extra = sorted(set(held) - keepers)
        if extra:
            problems.append(f"{name}: kept by {extra}, neither an entry of {entries} "
                            f"nor host {location} nor a standby")
        if check_roles:
            for cluster, r in sorted(held.items()):
                want = _expected_role(cluster, entries, str(location), standbys)
                if cluster in keepers and r.get("role") != want:
                    problems.append(f"{name}: role {r.get('role')} at {cluster}, want {want}")
    return _result("records_agree", problems, f"{len(records)} services, records agree")


def one_steward(snapshot: Snapshot, *,
                tombstones: frozenset[str] = TOMBSTONE_STATES) -> CheckResult:
    """Every peer keeping a live record of a service names the same steward, and it is the
    first entry of the home set that answers (DESIGN "The home set": the HC when alive)."""
    problems = []
    for name, held in sorted(live_records(snapshot, tombstones=tombstones).items()):
        stewards = {cluster: rec.get("steward") for cluster, rec in held.items()}
        named = set(stewards.values())
        if len(named) != 1:
            problems.append(f"{name}: stewards differ {dict(sorted(stewards.items()))}")
            continue
        steward = named.pop()
        entries = [str(e) for e in (next(iter(held.values())).get("homes") or [])]
        first = next((e for e in entries if e in snapshot), None)
        if steward is None:
            problems.append(f"{name}: no steward")
        elif steward != first:
            problems.append(f"{name}: steward {steward}, want {first}, the first of {entries} "
                            "that answers")
    return _result("one_steward", problems, "one steward per service, the first live entry")


def entry_endpoints(snapshot: Snapshot, *,
                    tombstones: frozenset[str] = TOMBSTONE_STATES) -> dict[str, list[str]]:
    """{service: every entry endpoint some peer's live record names}, in first-seen order."""
    out: dict[str, list[str]] = {}
    for _, held in sorted(live_records(snapshot, tombstones=tombstones).items()):
        for rec in held.values():
            for ep in rec.get("endpoints") or []:
                seen = out.setdefault(str(rec["name"]), [])
                if ep not in seen:
                    seen.append(str(ep))
    return out


def every_entry_serves(snapshot: Snapshot, answers: Mapping[str, Mapping[str, str | None]], *,
                       tombstones: frozenset[str] = TOMBSTONE_STATES) -> CheckResult:
    """Each entry of every service's home set has a known endpoint, and a GET through it was
    answered by the cluster the records name as location. `answers` is
    `{service: {endpoint: cluster that answered, or None}}` over `entry_endpoints`."""
    problems = []
    for name, held in sorted(live_records(snapshot, tombstones=tombstones).items()):
        rec = next(iter(held.values()))
        homes, endpoints = list(rec.get("homes") or []), list(rec.get("endpoints") or [])
        if len(endpoints) != len(homes):
            problems.append(f"{name}: {len(homes)} entries {homes} but endpoints {endpoints}")
        for ep, who in sorted(answers.get(name, {}).items()):
            if who != rec.get("location"):
                problems.append(f"{name}: entry {ep} answered from {who}, "
                                f"service at {rec.get('location')}")
    return _result("every_entry_serves", problems, "every entry serves")


def _canon(value: Any) -> Any:
    """Hashable, order-independent form of a record field (vclocks are dicts)."""
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _canon(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(_canon(v) for v in value)
    return value


def members_alive(snapshot: Snapshot, clusters: Iterable[str]) -> CheckResult:
    """Every peer sees every cluster as an alive member (a quiet, healed federation)."""
    clusters = sorted(clusters)
    problems = []
    for cluster in clusters:
        view = snapshot.get(cluster)
        if view is None:
            problems.append(f"no snapshot from {cluster}")
            continue
        status = {m.get("name"): m.get("status") for m in view.get("members", [])}
        wrong = {c: status.get(c, "absent") for c in clusters if status.get(c) != "alive"}
        if wrong:
            problems.append(f"{cluster} sees {wrong}")
    return _result("members_alive", problems, f"{len(clusters)} peers see all alive")


def nothing_left_behind(leftovers: Mapping[str, Sequence[object]]) -> CheckResult:
    """No namespace, link, tagged iptables rule or process survived teardown
    (`chaos.leftovers.probe(...).as_dict()`)."""
    problems = [f"{kind}: {list(items)}" for kind, items in sorted(leftovers.items()) if items]
    return _result("nothing_left_behind", problems, "nothing left behind")
