"""Issue 12 finding 8 on a real agent: truncated or malformed requests from anyone (no token,
no signature) must not flood the log: no ERROR, no traceback, at most one WARNING per source."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from peer.runtime.waiting import wait_until
from tests.harness import dump_logs, federation

pytestmark = pytest.mark.integration

A = "127.0.4.41"
TRUNCATED = ("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
             "Content-Length: 1000\r\n\r\nabc")
BAD_CHUNKS = "POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n"


async def send_and_leave(raw: str, *, read: bool) -> bytes:
    reader, writer = await asyncio.open_connection(A, 7070)
    writer.write(raw.encode())
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(200), 10) if read else b""
    writer.close()
    return answer


async def test_finding_8_truncated_and_malformed_requests_stay_quiet(tmp_path: Path) -> None:
    async with federation(tmp_path) as fed:
        try:
            agent = fed.add("c1", A)
            agent.start()
            await fed.wait_healthy("c1")
            before = agent.log_path.stat().st_size
            for i in range(300):  # the finding: 300 of these added 329 KB of tracebacks
                path = ("/peer/v1/sync", "/v1/services", "/v1/drain")[i % 3]
                await send_and_leave(TRUNCATED.format(path=path), read=False)
            answers = [await send_and_leave(BAD_CHUNKS.format(path=p), read=True)
                       for p in ("/peer/v1/sync", "/v1/services") * 5]
            await fed.wait_healthy("c1")
            assert all(a.startswith(b"HTTP/1.") and b" 400 " in a.split(b"\r\n")[0] for a in answers), answers
            # The one WARNING (for the bad chunks, sent last) shows the agent has got that far.
            await wait_until(lambda: "malformed request" in _added(agent.log_path, before), timeout=10,
                             what="the malformed-request warning")
            added = _added(agent.log_path, before)
            print(f"310 hostile requests added {len(added)} bytes of log")
            assert "ERROR" not in added and "Traceback" not in added, added[:3000]
            assert added.count("WARNING") == 1, added
            assert len(added) < 1024, added
        except BaseException:
            print(dump_logs(fed))
            raise


def _added(log: Path, offset: int) -> str:
    with open(log, "rb") as fh:
        fh.seek(offset)
        return fh.read().decode(errors="replace")
