"""The stages of one migration, named once.

`TABLE_STAGES` are the five stages of the paper's Table I plus `deploy` (the AC's start of the
copy, which overlaps `wait`): the admin API's contract and the columns the CLI, the chaos
figures and the benchmarks print. `STAGES` adds roam's two stages of a stateful service:
`state` (the pre-copy while the old copy still serves) and `handover` (requests held at every
entry while the last state is copied and the routes switch; it overlaps `reroute`); both are
null for a stateless service.
"""
from __future__ import annotations

TABLE_STAGES = ("pr", "replication", "wait", "reroute", "cleanup", "deploy")
STAGES = ("pr", "replication", "wait", "state", "handover", "reroute", "cleanup", "deploy")
