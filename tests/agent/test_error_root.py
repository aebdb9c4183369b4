"""Issue 13: every error `peer` defines shares one root (peer.errors.RoamError), and none of
them carries an HTTP status: only peer/api maps errors to statuses (peer/api/statuses.py)."""
from __future__ import annotations

import importlib
import inspect
import pkgutil

import peer
from peer.api.statuses import status_of
from peer.errors import RoamError
from peer.migration.homes import StewardBadReply, StewardUnreachable
from peer.copies.manager import InvalidServiceRequest, NoSuchService, ServiceError, ServiceUnavailable, WorkloadRefused
from peer.trust.workload import Refusal

#: Errors of the HTTP boundaries themselves: they are the mapping, not what is mapped.
API_ERRORS = {"peer.api.http.APIError", "peer.api.http.NotFound", "peer.api.http.ConflictError",
              "peer.api.http.Unavailable"}


def peer_errors() -> list[type[BaseException]]:
    found = []
    for info in pkgutil.walk_packages(peer.__path__, "peer."):
        if info.name.endswith("__main__"):  # running it is the CLI, not a definition
            continue
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, Exception) and cls.__module__ == info.name:
                found.append(cls)
    return found


def test_every_peer_error_derives_from_the_root() -> None:
    strays = [f"{c.__module__}.{c.__qualname__}" for c in peer_errors()
              if not issubclass(c, RoamError) and f"{c.__module__}.{c.__qualname__}" not in API_ERRORS]
    assert strays == []


def test_service_errors_carry_no_status_and_map_in_the_api() -> None:
    assert not hasattr(ServiceError("x"), "status")
    assert [status_of(e) for e in (ServiceError("x"), NoSuchService("x"), InvalidServiceRequest("x"),
                                   ServiceUnavailable("x"), StewardBadReply("x"), StewardUnreachable("x"),
                                   WorkloadRefused(Refusal("allow-command", "refused", "python")))] \
        == [409, 404, 422, 503, 502, 409, 403]
