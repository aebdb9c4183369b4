"""roam's link to its Serf agent: a sans-I/O codec, an asyncio RPC client, and child supervision.

Why our own client: the PyPI `serf-python` package (0.2.2) is Python 2 code and cannot be
imported on Python 3, and `aioserf` needs anyio 1.x. Serf's RPC is a plain stream of msgpack
objects, so a small asyncio client over `msgpack` (`client.py` on top of `codec.py`) is less
risk than either.

Modules: `codec` (wire format, no I/O), `client` (one RPC connection), `process` (one child
`serf agent`), `keys` (keys derived from the federation secret), `coordinates` (Vivaldi RTT),
`errors` (the exception tree).
"""
from peer.serf.client import EventStream, SerfClient
from peer.serf.codec import (
    Coordinate,
    Event,
    KeyResponse,
    Member,
    MemberEvent,
    QueryEvent,
    QueryResponse,
    UserEvent,
)
from peer.serf.errors import (
    SerfAuthError,
    SerfCommandError,
    SerfConnectionError,
    SerfProtocolError,
    SerfRPCError,
    SerfStartError,
    SerfTimeoutError,
)
from peer.serf.process import SerfConfig, SerfProcess

__all__ = [
    "Coordinate",
    "Event",
    "EventStream",
    "KeyResponse",
    "Member",
    "MemberEvent",
    "QueryEvent",
    "QueryResponse",
    "SerfAuthError",
    "SerfClient",
    "SerfCommandError",
    "SerfConfig",
    "SerfConnectionError",
    "SerfProcess",
    "SerfProtocolError",
    "SerfRPCError",
    "SerfStartError",
    "SerfTimeoutError",
    "UserEvent",
]
