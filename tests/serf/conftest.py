"""Real `serf agent` children on this helper's loopback range (127.0.1.11-49), torn down after."""
from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from peer.serf.client import SerfClient
from peer.serf.keys import derive_encrypt_key, derive_rpc_auth
from peer.serf.process import SerfConfig, SerfProcess

SECRET = b"roam serf test secret"


@dataclass
class Node:
    name: str
    addr: str
    process: SerfProcess
    client: SerfClient


StartNode = Callable[..., Awaitable[Node]]


def node_config(tmp_path: Path, host: int, *, secret: bytes = SECRET, **kw: Any) -> SerfConfig:
    return SerfConfig(
        node_name=f"serf-t{host}",
        bind_addr=f"127.0.1.{host}",
        data_dir=tmp_path / f"serf-t{host}",
        encrypt_key=derive_encrypt_key(secret),
        rpc_auth=derive_rpc_auth(secret),
        **kw,
    )


@pytest.fixture
async def start_node(tmp_path: Path) -> AsyncIterator[StartNode]:
    """`await start_node(11, tags=...)`: a running agent on 127.0.1.11 and a client to it."""
    nodes: list[Node] = []
    processes: list[SerfProcess] = []

    async def start(host: int, **kw: Any) -> Node:
        process = SerfProcess(node_config(tmp_path, host, **kw))
        processes.append(process)
        await process.start()
        node = Node(process.config.node_name, process.config.bind_addr, process,
                    await process.client())
        nodes.append(node)
        return node

    try:
        yield start
    finally:
        for node in nodes:
            await node.client.close()
        for process in processes:
            await process.stop()
        assert not any(p.running for p in processes)
