"""Pure parts of the CLI and of the key-mismatch report, from tables of cases."""
from __future__ import annotations

import pytest

from peer.cli.client import ClientError, normalize_api
from peer.cli.output import endpoints_of, render, total_ms
from peer.serf.process import scan_key_mismatch


@pytest.mark.parametrize(("given", "expected"), [
    ("127.0.2.5", "http://127.0.2.5:7070"),
    ("127.0.2.5:8080", "http://127.0.2.5:8080"),
    ("http://127.0.2.5:7070/", "http://127.0.2.5:7070"),
    ("https://edge-1.example:7443", "https://edge-1.example:7443"),
    ("::1", "http://[::1]:7070"),
    ("[::1]:9000", "http://[::1]:9000"),
    ("localhost", "http://localhost:7070"),
])
def test_api_addresses_need_no_scheme_nor_port(given: str, expected: str) -> None:
    assert normalize_api(given) == expected


@pytest.mark.parametrize("bad", ["", "  ", "ftp://h", "http://[nope", "h:99999", "http://"])
def test_bad_api_addresses_are_a_client_error_naming_the_flag(bad: str) -> None:
    with pytest.raises(ClientError, match="--api"):
        normalize_api(bad)


def test_endpoints_prefer_the_list_and_fall_back_to_the_single_endpoint() -> None:
    assert endpoints_of({"endpoints": ["a:1", "b:2"], "endpoint": "a:1"}) == ["a:1", "b:2"]
    assert endpoints_of({"endpoint": "a:1"}) == ["a:1"]
    assert endpoints_of({"endpoint": None}) == []


def test_tables_render_old_and_new_records() -> None:
    old = {"name": "s", "role": "LR", "state": "running", "home": "c1", "location": "c1", "endpoint": "c1:30000"}
    new = {**old, "homes": ["c1", "c2"], "endpoints": ["c1:30000", "c2:30000"], "steward": "c2", "standbys": ["c3"]}
    text = render("services", [old, new], "wide")
    assert "c1:30000,c2:30000" in text and "c1,c2" in text and "c3" in text
    assert text.splitlines()[1].split()[3] == "c1"  # steward falls back to home


def test_migration_total_is_wall_time() -> None:
    assert total_ms({"started_at": 10.0, "finished_at": 10.25, "durations_ms": {"wait": 200, "deploy": 200}}) == 250.0
    assert total_ms({"started_at": 10.0, "finished_at": None}) is None


def test_key_mismatch_lines_are_found_with_their_time() -> None:
    log = ("    2026/12/04 13:57:43 [INFO] serf: EventMemberJoin: c6 127.0.2.2\n"
           "    2026/12/04 13:57:44 [WARN] agent: error joining: 1 error occurred:\n"
           "\t* Failed to join 127.0.2.1: No installed keys could decrypt the message\n"
           "    2026/12/04 13:57:45 [ERR] memberlist: failed to receive: No installed keys could decrypt the message from=127.0.0.1:5\n")
    found = scan_key_mismatch(log, default_at=0.0)
    assert found is not None and found.count == 2 and found.line.endswith("from=127.0.0.1:5")
    assert found.at > 0
    assert scan_key_mismatch("    2026/12/04 13:57:43 [INFO] all good\n", default_at=0.0) is None
