"""roam's load balancer: one HAProxy per cluster, driven through its runtime API, never reloaded.

Public API: `LoadBalancer` (the facade), `RerouteResult`, `ServerStatus`, the errors in
`lb.errors`, and `FakeLoadBalancer` (in-memory twin for unit tests of callers).
"""
from lb.balancer import LoadBalancer, ServerStatus, ServerTraffic
from lb.errors import (HAProxyCommandError, HAProxyConnectionError, HAProxyStartError,
                       InvalidTokenError, LBError, NoFreeSlotError, RerouteError,
                       UnknownServiceError)
from lb.fake import FakeLoadBalancer
from lb.reroute import RerouteResult

__all__ = [
    "HAProxyCommandError", "HAProxyConnectionError", "HAProxyStartError", "InvalidTokenError",
    "LBError", "LoadBalancer", "NoFreeSlotError", "RerouteError", "RerouteResult",
    "ServerStatus", "ServerTraffic", "UnknownServiceError", "FakeLoadBalancer",
]
