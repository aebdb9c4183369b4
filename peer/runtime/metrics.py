"""Prometheus metrics of one agent, on a registry of its own (several agents may share a process in tests).

Rendered by peer.runtime.promtext, which writes what prometheus_client would, without importing it
(about 1.1 MB of an idle agent's RSS; issue 18)."""
from __future__ import annotations

from peer.runtime.promtext import Counter, Gauge, Histogram, Registry


class Metrics:
    def __init__(self, cluster: str) -> None:
        self.registry = Registry()
        self.members = Gauge(
            "roam_members", "Members of the federation by Serf status, as this agent sees them",
            ["status"], registry=self.registry,
        )
        self.gossip_events = Counter(
            "roam_gossip_events_total", "Serf events received on the stream, by type",
            ["type"], registry=self.registry,
        )
        self.status_changes = Counter(
            "roam_member_status_changes_total", "Member status transitions seen", ["to"], registry=self.registry,
        )
        self.serf_restarts = Counter("roam_serf_restarts_total", "Times the Serf child was restarted", registry=self.registry)
        self.rejoins = Counter("roam_rejoin_attempts_total", "Joins attempted towards failed peers", registry=self.registry)
        self.tag_updates = Counter("roam_tag_updates_total", "Load/tag publications to Serf", registry=self.registry)
        self.services = Gauge("roam_services", "Records kept by role", ["role"], registry=self.registry)
        self.stage_seconds = Histogram(
            "roam_migration_stage_seconds", "Duration of each migration stage", ["stage"],
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.migrations = Counter(
            "roam_migrations_total", "Migrations and fail-safe redeploys by kind and outcome",
            ["kind", "outcome"], registry=self.registry,
        )
        self.failsafe_ahead = Counter(
            "roam_failsafe_copies_ahead_total", "Home copies the fail-safe started at the first evidence of a "
            "loss, by outcome: confirmed (the loss was confirmed: the fail-safe went on) or removed (not "
            "confirmed: a false suspicion, nothing else happened)", ["outcome"], registry=self.registry,
        )
        self.link_probe_bytes = Counter(
            "roam_link_probe_bytes_total", "Bytes the link probe sent, by peer (peer.links.estimate's budget)",
            ["peer"], registry=self.registry,
        )
        self.record_refusals = Counter(
            "roam_record_versions_refused_total", "Remote record versions refused by the author-signature "
            "check (issue 19), by reason", ["reason"], registry=self.registry,
        )
        self.record_vouched = Counter(
            "roam_record_versions_channel_total", "Remote record versions taken with their sender's own stamps on "
            "the authority of the mTLS channel they came on (ECDSA check skipped; audited before relaying)",
            registry=self.registry,
        )
        self.info = Gauge("roam_agent_info", "Constant 1, labelled with the cluster name", ["cluster"], registry=self.registry)
        self.info.labels(cluster=cluster).set(1)

    def render(self) -> bytes:
        return self.registry.render()
