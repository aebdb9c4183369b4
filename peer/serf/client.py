"""An asyncio client for one Serf agent's msgpack RPC.

How it works, in one screen:
- `connect()` opens TCP, sends `handshake` (Version 1) and then `auth` when a key is given;
  the agent closes connections that skip either.
- Every request gets a fresh Seq. `_call()` registers the Seq with the codec's
  `FrameAssembler` (so the reader knows whether a body follows the reply header), writes the
  request and waits, with a timeout, for the future that the reader task resolves.
- One reader task (`_read_loop`) feeds bytes to the decoder and routes each frame by Seq: the
  first reply to a future in `_pending`; later records (event streams, query responses) to
  a sink in `_sinks`.
- When the connection drops, `_lose()` fails every pending call and every sink with
  `SerfConnectionError`; the client is then closed for good (make a new one to reconnect).
"""
from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Protocol

from peer.serf import codec
from peer.serf.codec import (
    Coordinate,
    Event,
    Frame,
    KeyResponse,
    Member,
    QueryResponse,
)
from peer.serf.errors import (
    SerfAuthError,
    SerfCommandError,
    SerfConnectionError,
    SerfProtocolError,
    SerfRPCError,
    SerfTimeoutError,
)
from peer.runtime.supervision import Supervisor

IPC_VERSION = 1
_AUTH_ERRORS = frozenset({"Authentication required", "Invalid authentication token"})
#: How long `query()` waits for "done" when no timeout is given (Serf's own default is
#: 3.2 s for up to 9 nodes on the lan profile and grows with the log of the cluster size).
DEFAULT_QUERY_WAIT = 30.0
#: Events buffered for a consumer that does not keep up, before its stream is failed.
MAX_STREAM_BACKLOG = 10_000
#: Go regexp (RE2) lacks these Python constructs; the agent would drop the connection.
_NOT_RE2 = re.compile(r"\(\?<?[=!]|\\[1-9]|\\Z|\(\?P=")


class _Sink(Protocol):
    """Receives the records that follow the first reply of a stream or query."""

    def deliver(self, frame: Frame) -> None: ...

    def fail(self, exc: BaseException) -> None: ...


class SerfClient:
    """One authenticated RPC connection to a Serf agent. Make it with `connect()`."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, timeout: float
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._timeout = timeout
        self._seq = 0
        self._decoder = codec.ObjectDecoder()
        self._assembler = codec.FrameAssembler()
        self._pending: dict[int, asyncio.Future[Frame]] = {}
        self._sinks: dict[int, _Sink] = {}
        self._lost: tuple[str, BaseException | None] | None = None  # why we are closed
        self._jobs = Supervisor("serf-rpc")
        self._read_task = self._jobs.spawn(self._read_loop(), name="reader")

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int = 7373,
        *,
        auth_key: str | None = None,
        timeout: float = 5.0,
    ) -> SerfClient:
        """Open, handshake and authenticate; `timeout` also bounds every later call."""
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(host, port)
        except (OSError, TimeoutError) as exc:
            raise SerfConnectionError(f"cannot reach serf RPC at {host}:{port}: {exc!r}") from exc
        client = cls(reader, writer, timeout=timeout)
        try:
            await client._call("handshake", {"Version": IPC_VERSION})
            if auth_key is not None:
                await client._call("auth", {"AuthKey": auth_key})
        except BaseException:
            await client.close()
            raise
        return client

    async def close(self) -> None:
        """Close the connection; pending calls and open streams fail with SerfConnectionError."""
        self._lose("connection closed by the client")
        await self._jobs.stop()
        try:
            async with asyncio.timeout(self._timeout):
                await self._writer.wait_closed()
        except TimeoutError:
            self._writer.transport.abort()  # the agent does not read (stopped?): drop the buffer
        except OSError:
            pass  # a reset connection has nothing left to flush

    @property
    def closed(self) -> bool:
        return self._lost is not None

    async def __aenter__(self) -> SerfClient:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # ------------------------------------------------------------------ membership

    async def members(self) -> list[Member]:
        return codec.parse_members((await self._call("members")).body)

    async def members_filtered(
        self,
        *,
        tags: dict[str, str] | None = None,
        status: str | None = None,
        name: str | None = None,
    ) -> list[Member]:
        """Members whose tags, status and name fully match these (RE2) regular expressions."""
        tags = tags or {}
        for pattern in (*tags.values(), status or "", name or ""):
            _check_regex(pattern)
        body = {"Tags": tags, "Status": status or "", "Name": name or ""}
        return codec.parse_members((await self._call("members-filtered", body)).body)

    async def tags(
        self, *, add: dict[str, str] | None = None, delete: list[str] | None = None
    ) -> None:
        """Set and delete this agent's tags (512 bytes for all tags, encoded, at most)."""
        await self._call("tags", {"Tags": add or {}, "DeleteTags": delete or []})

    async def join(self, addrs: list[str], *, replay: bool = False) -> int:
        """Join the cluster through `addrs` ("ip" or "ip:port"); return how many answered."""
        frame = await self._call("join", {"Existing": list(addrs), "Replay": replay}, check=False)
        if frame.error:
            raise _command_error("join", frame.error)
        return codec.parse_join(frame.body)

    async def leave(self) -> None:
        """Leave gracefully; the agent then shuts down and this connection drops."""
        await self._call("leave")

    async def force_leave(self, node: str) -> None:
        """Mark a failed member as left, so it is not reconnected to or reported as failed."""
        await self._call("force-leave", {"Node": node})

    async def get_coordinate(self, node: str) -> Coordinate | None:
        """The agent's cached Vivaldi coordinate of `node`, None if it has none yet."""
        return codec.parse_coordinate((await self._call("get-coordinate", {"Node": node})).body)

    async def stats(self) -> dict[str, dict[str, str]]:
        return codec.parse_stats((await self._call("stats")).body)

    # ------------------------------------------------------------------ events and queries

    async def user_event(self, name: str, payload: bytes = b"", *, coalesce: bool = True) -> None:
        await self._call("event", {"Name": name, "Payload": payload, "Coalesce": coalesce})

    async def stream(self, event_filter: str = "*") -> EventStream:
        """Subscribe to events ("*", "user", "user:NAME", "member-join,query", ...)."""
        stream = EventStream(self)
        frame = await self._call("stream", {"Type": event_filter}, sink=stream)
        stream._seq = frame.seq
        return stream

    async def query(
        self,
        name: str,
        payload: bytes = b"",
        *,
        filter_nodes: list[str] | None = None,
        filter_tags: dict[str, str] | None = None,
        request_ack: bool = False,
        timeout: float | None = None,
    ) -> list[QueryResponse]:
        """Send a query and collect acks and responses until the agent says "done".

        `timeout` is the query's deadline inside Serf (None: Serf's default); we wait that
        long plus the client timeout.
        """
        body = {
            "FilterNodes": filter_nodes or [],
            "FilterTags": filter_tags or {},
            "RequestAck": request_ack,
            "Timeout": int((timeout or 0) * 1e9),  # a Go time.Duration: nanoseconds
            "Name": name,
            "Payload": payload,
        }
        collector = _QueryCollector()
        frame = await self._call("query", body, sink=collector)
        wait = (timeout or DEFAULT_QUERY_WAIT) + self._timeout
        try:
            async with asyncio.timeout(wait):
                return await collector.done
        except TimeoutError as exc:
            raise SerfTimeoutError(f"serf query {name!r}: no 'done' within {wait:.1f}s") from exc
        finally:
            self._sinks.pop(frame.seq, None)

    async def respond(self, query_id: int, payload: bytes) -> None:
        """Answer a `QueryEvent` received on a stream of this same client."""
        await self._call("respond", {"ID": query_id, "Payload": payload})

    # ------------------------------------------------------------------ keyring

    async def install_key(self, key: str) -> KeyResponse:
        return await self._key_command("install-key", {"Key": key})

    async def use_key(self, key: str) -> KeyResponse:
        return await self._key_command("use-key", {"Key": key})

    async def remove_key(self, key: str) -> KeyResponse:
        return await self._key_command("remove-key", {"Key": key})

    async def list_keys(self) -> KeyResponse:
        return await self._key_command("list-keys", None)

    async def _key_command(self, command: str, body: Mapping[str, Any] | None) -> KeyResponse:
        frame = await self._call(command, body, check=False)
        response = codec.parse_key_response(frame.body)
        if frame.error:
            detail = f"{frame.error.strip()} {response.messages}" if response.messages else ""
            raise _command_error(command, detail or frame.error)
        return response

    # ------------------------------------------------------------------ plumbing

    async def _call(
        self,
        command: str,
        body: Mapping[str, Any] | None = None,
        *,
        sink: _Sink | None = None,
        check: bool = True,
    ) -> Frame:
        """Send one request and wait for its first reply (raising on `Error` if `check`)."""
        if self._lost is not None:
            raise self._connection_error()
        self._seq += 1
        seq = self._seq
        self._assembler.expect(seq, command)
        reply: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self._pending[seq] = reply
        if sink is not None:
            self._sinks[seq] = sink  # before sending: records may follow the reply at once
        try:
            self._writer.write(codec.encode_request(command, seq, body))
            async with asyncio.timeout(self._timeout):
                await self._writer.drain()
                frame = await reply
        except SerfConnectionError:
            raise  # set on `reply` by _lose(): the connection is already marked dead
        except TimeoutError as exc:
            self._sinks.pop(seq, None)
            raise SerfTimeoutError(f"serf {command}: no reply within {self._timeout}s") from exc
        except OSError as exc:
            self._lose("write to serf failed", exc)
            raise self._connection_error() from exc
        except BaseException:
            self._sinks.pop(seq, None)
            raise
        finally:
            self._pending.pop(seq, None)
        if frame.error and (check or frame.error in _AUTH_ERRORS):
            self._sinks.pop(seq, None)
            raise _command_error(command, frame.error)
        return frame

    async def _read_loop(self) -> None:
        try:
            while True:
                data = await self._reader.read(65536)
                if not data:
                    self._lose("serf agent closed the RPC connection")
                    return
                for obj in self._decoder.feed(data):
                    frame = self._assembler.push(obj)
                    if frame is not None:
                        self._dispatch(frame)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # OSError, SerfProtocolError, or a bug: fail loudly, once
            self._lose(f"RPC connection failed: {exc!r}", exc)
        finally:
            self._lose("RPC reader stopped")  # no-op unless cancelled or crashed

    def _dispatch(self, frame: Frame) -> None:
        if frame.record:
            sink = self._sinks.get(frame.seq)
            if sink is not None:  # else: a stream we stopped; drop its late records
                sink.deliver(frame)
            return
        reply = self._pending.get(frame.seq)
        if reply is not None and not reply.done():  # else: the caller gave up (timeout)
            reply.set_result(frame)

    def _lose(self, reason: str, cause: BaseException | None = None) -> None:
        """Mark the connection dead (first reason wins) and fail everyone waiting on it."""
        if self._lost is not None:
            return
        self._lost = (reason, cause)
        self._writer.close()
        for reply in self._pending.values():
            if not reply.done():
                reply.set_exception(self._connection_error())
        for sink in self._sinks.values():
            sink.fail(self._connection_error())
        self._pending.clear()
        self._sinks.clear()

    def _connection_error(self) -> SerfConnectionError:
        reason, cause = self._lost or ("not connected", None)
        err = SerfConnectionError(reason)
        err.__cause__ = cause
        return err

    def _forget_sink(self, seq: int) -> None:
        self._sinks.pop(seq, None)


class EventStream:
    """Events from `SerfClient.stream()`: `async for event in stream`, then `close()`.

    Iteration ends after `close()`; it raises SerfConnectionError when the connection drops
    (after the events that arrived before), and SerfRPCError if the consumer falls more than
    `MAX_STREAM_BACKLOG` events behind.
    """

    def __init__(self, client: SerfClient) -> None:
        self._client = client
        self._seq = 0  # set once the agent accepted the stream
        self._queue: asyncio.Queue[Event | _End] = asyncio.Queue()
        self._ended = False

    def deliver(self, frame: Frame) -> None:
        if self._ended:
            return
        try:
            event = codec.parse_event(frame.body)
        except SerfProtocolError as exc:
            self.fail(exc)
            return
        if self._queue.qsize() >= MAX_STREAM_BACKLOG:
            self.fail(SerfRPCError(f"event stream consumer over {MAX_STREAM_BACKLOG} events behind"))
            return
        self._queue.put_nowait(event)

    def fail(self, exc: BaseException) -> None:
        self._end(exc)

    def _end(self, exc: BaseException | None) -> None:
        if not self._ended:
            self._ended = True
            self._queue.put_nowait(_End(exc))

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Event:
        item = await self._queue.get()
        if isinstance(item, _End):
            self._queue.put_nowait(item)  # every later call ends the same way
            if item.error is None:
                raise StopAsyncIteration
            raise item.error
        return item

    async def close(self) -> None:
        """Stop the stream at the agent (sends "stop"); a dead connection is fine."""
        if self._ended:
            return
        self._end(None)
        self._client._forget_sink(self._seq)
        if not self._client.closed:
            try:
                await self._client._call("stop", {"Stop": self._seq})
            except SerfConnectionError:
                pass

    async def __aenter__(self) -> EventStream:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


class _End:
    """Queue marker: the stream is over, cleanly (`error` None) or not."""

    def __init__(self, error: BaseException | None) -> None:
        self.error = error


class _QueryCollector:
    """Gathers a query's acks and responses; `done` resolves on the "done" record."""

    def __init__(self) -> None:
        self.responses: list[QueryResponse] = []
        self.done: asyncio.Future[list[QueryResponse]] = (
            asyncio.get_running_loop().create_future()
        )

    def deliver(self, frame: Frame) -> None:
        try:
            record = codec.parse_query_record(frame.body)
        except SerfProtocolError as exc:
            self.fail(exc)
            return
        if record.kind == "done":
            if not self.done.done():
                self.done.set_result(self.responses)
        elif record.from_node:
            self.responses.append(record)
        # else: no node sent it. Serf's agent forwards a query's acks and responses until its
        # own timer for the deadline fires; Serf closes those channels at the same deadline,
        # and a closed Go channel yields empty values at once, so the agent may stream empty
        # acks (and responses) in a tight loop until then: hundreds on a busy machine
        # (cmd/serf/command/agent/ipc_query_response_stream.go, `Stream`).

    def fail(self, exc: BaseException) -> None:
        if not self.done.done():
            self.done.set_exception(exc)


def _command_error(command: str, error: str) -> SerfRPCError:
    if error in _AUTH_ERRORS:
        return SerfAuthError(f"serf {command}: {error}")
    return SerfCommandError(command, error)


def _check_regex(pattern: str) -> None:
    """Refuse patterns Serf cannot compile: it would drop the connection without a word."""
    try:
        re.compile(pattern)
    except re.error as exc:
        raise SerfCommandError("members-filtered", f"invalid regex {pattern!r}: {exc}") from exc
    if _NOT_RE2.search(pattern):
        raise SerfCommandError(
            "members-filtered", f"regex {pattern!r} uses a construct Go's RE2 lacks"
        )
