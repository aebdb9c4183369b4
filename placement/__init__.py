"""The embedded Meta-Orchestrator: pure functions from a service's needs and the gossiped
cluster views to ranked destinations (`rank`), admission checks (`admit`) and migration
triggers (`decide`). No I/O: the agent (`peer`) feeds it views and acts on its answers.
"""
from placement.errors import (
    DuplicateCluster,
    InvalidPolicy,
    InvalidRequirements,
    InvalidThresholds,
    InvalidView,
    PlacementError,
    UnknownPolicy,
)
from placement.model import Candidate, ClusterView, Placement, Rejection, Requirements
from placement.policies import (
    DEFAULT_POLICY,
    POLICIES,
    Balanced,
    LeastLoaded,
    Nearest,
    Policy,
    get_policy,
)
from placement.rank import admit, rank
from placement.triggers import (
    DEFAULT_THRESHOLDS,
    ComeHome,
    Decision,
    LinkQuality,
    Move,
    Stay,
    Thresholds,
    Trigger,
    decide,
    link_quality,
)

__all__ = [
    "DEFAULT_POLICY", "DEFAULT_THRESHOLDS", "POLICIES",
    "Balanced", "Candidate", "ClusterView", "ComeHome", "Decision", "DuplicateCluster",
    "InvalidPolicy", "InvalidRequirements", "InvalidThresholds", "InvalidView", "LeastLoaded",
    "LinkQuality", "Move", "Nearest", "Placement", "PlacementError", "Policy", "Rejection",
    "Requirements", "Stay", "Thresholds", "Trigger", "UnknownPolicy",
    "admit", "decide", "get_policy", "link_quality", "rank",
]
