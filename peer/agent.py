"""The roam agent: one per cluster, the paper's Controller. Composes its parts in one readable place.

Start order is dependency order (credentials, gossip, HTTP); stop is the reverse.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl

from aiohttp import web

from peer.api.admin import add_admin_routes
from peer.api.http import MAX_BODY, bearer_auth_middleware, error_middleware
from peer.config import AgentConfig
from peer.credentials import Credentials, load_credentials
from peer.gossip import Load
from peer.gossiping import Gossip
from peer.membership import Membership
from peer.metrics import Metrics

log = logging.getLogger(__name__)


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.metrics = Metrics(config.name)
        self.membership = Membership(config.name)
        self.creds: Credentials | None = None
        self.gossip: Gossip | None = None
        self._runner: web.AppRunner | None = None
        self._stopped = asyncio.Event()

    def current_load(self) -> Load:
        cap = self.config.capacity
        return Load(
            cpu_capacity=cap.cpu, cpu_used=0.0, mem_capacity=cap.memory >> 20, mem_used=0,
            slots_capacity=cap.slots, slots_used=0,
        )

    async def start(self) -> None:
        self.config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.creds = load_credentials(
            data_dir=self.config.data_dir, token_file=self.config.token_file, secret_file=self.config.secret_file
        )
        for path in self.creds.generated:
            log.warning("generated %s (mode 0600)", path)
        self.gossip = Gossip(
            config=self.config, secret=self.creds.federation_secret, membership=self.membership,
            metrics=self.metrics, initial_load=self.current_load(),
        )
        await self.gossip.start()
        try:
            await self._start_http()
        except BaseException:
            await self.gossip.stop(leave=False)
            raise
        log.info("agent %s up: api %s", self.config.name, self.config.api_url)

    async def _start_http(self) -> None:
        assert self.creds is not None
        app = web.Application(
            client_max_size=MAX_BODY,
            middlewares=[error_middleware, bearer_auth_middleware(self.creds.admin_token)],
        )
        add_admin_routes(app, self)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.addr, self.config.api_port, ssl_context=self._ssl_context())
        await site.start()

    def _ssl_context(self) -> ssl.SSLContext | None:
        if not self.config.tls_cert or not self.config.tls_key:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.config.tls_cert, self.config.tls_key)
        return ctx

    def refresh_gauges(self) -> None:
        for status, count in self.membership.counts().items():
            self.metrics.members.labels(status=status).set(count)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self.gossip is not None:
            await self.gossip.stop(leave=True)
        self._stopped.set()

    async def run_until_signalled(self) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        try:
            await stop.wait()
        finally:
            log.info("shutting down")
            with contextlib.suppress(Exception):
                await self.stop()
