"""An idle daemon imports only what it uses (issue 18's memory): each check runs a fresh
interpreter, because this one has imported everything already."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def _run(code: str, env: dict[str, str] | None = None) -> dict[str, object]:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ, **(env or {})}, check=True)
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_importing_the_cli_loads_no_client_code() -> None:
    """`roam agent` goes through peer.cli; the client commands are built only for a client."""
    code = ("import json, sys, peer.cli, peer.cli.agentcmd\n"
            "heavy = ('peer.cli.commands', 'peer.cli.client', 'peer.cli.ca', 'urllib.request', "
            "'importlib.metadata', 'aiohttp')\n"
            "print(json.dumps({'loaded': [m for m in heavy if m in sys.modules]}))")
    got = _run(code)
    assert got == {"loaded": []}


def test_the_full_cli_is_still_there_on_first_use() -> None:
    got = _run("import json, peer.cli\n"
               "print(json.dumps({'commands': sorted(peer.cli.cli.commands), "
               "'error': peer.cli.ClientError.__name__}))")
    commands = got["commands"]
    assert isinstance(commands, list) and {"agent", "ca", "status", "migrate"} <= set(commands)
    assert got["error"] == "ClientError"


def test_the_agent_holds_no_openapi_document() -> None:
    got = _run("import json, sys, peer.agent\nprint(json.dumps({'openapi': 'peer.api.openapi' in sys.modules}))")
    assert got == {"openapi": False}


@pytest.mark.parametrize("before", [None, "/etc/ssl/certs/some-bundle.pem"])
def test_aiohttp_imported_without_the_ca_bundle_and_the_environment_restored(before: str | None) -> None:
    env = {} if before is None else {"SSL_CERT_FILE": before}
    code = ("import json, os\nfrom peer.runtime.lazyimport import lean_imports\n"
            "os.environ.pop('SSL_CERT_FILE', None) if %r is None else None\n"
            "with lean_imports():\n    import aiohttp.connector as c\n"
            "print(json.dumps({'cas': c._SSL_CONTEXT_VERIFIED.cert_store_stats()['x509_ca'], "
            "'env': os.environ.get('SSL_CERT_FILE')}))") % (before,)
    got = _run(code, env)
    assert got == {"cas": 0, "env": before}


def test_a_context_made_after_the_block_loads_the_ca_bundle_as_usual() -> None:
    """Only the import is lean: TLS the agent sets up later sees the system's defaults."""
    code = ("import json, os, ssl\nos.environ.pop('SSL_CERT_FILE', None)\n"
            "from peer.runtime.lazyimport import lean_imports\n"
            "with lean_imports():\n    import aiohttp\n"
            "print(json.dumps({'cas': ssl.create_default_context().cert_store_stats()['x509_ca'] > 0, "
            "'bundle': os.path.exists(ssl.get_default_verify_paths().openssl_cafile)}))")
    got = _run(code)
    assert got["cas"] == got["bundle"]


def test_aiohttp_imported_without_the_system_mime_table() -> None:
    code = ("import json, mimetypes\nfrom peer.runtime.lazyimport import lean_imports\nknown = list(mimetypes.knownfiles)\n"
            "with lean_imports():\n    import aiohttp.web\n"
            "import aiohttp.web_fileresponse as f\n"
            "print(json.dumps({'types': len(mimetypes.types_map), 'builtin': "
            "len(mimetypes._types_map_default), 'aiohttp': len(f.CONTENT_TYPES.types_map[True]), 'restored': mimetypes.knownfiles == known, "
            "'html': mimetypes.guess_type('a.html')[0]}))")
    got = _run(code)
    assert got["types"] == got["builtin"]  # Python's own table, not the system's
    assert isinstance(got["aiohttp"], int) and got["aiohttp"] < 2 * got["types"]  # type: ignore[operator]
    assert got["restored"] is True and got["html"] == "text/html"


@pytest.mark.parametrize("before", [None, "0"])
def test_aiohttp_imported_with_the_python_frozenlist_and_no_cpp_runtime(before: str | None) -> None:
    """frozenlist's compiled class is the only C++ the agent would load (libstdc++, ~1.3 MB of
    RSS); its Python class behaves the same, and the variable is put back for the services."""
    env = {} if before is None else {"FROZENLIST_NO_EXTENSIONS": before}
    code = ("import json, os\nos.environ.pop('FROZENLIST_NO_EXTENSIONS', None) if %r is None else None\n"
            "from peer.runtime.lazyimport import lean_imports\n"
            "with lean_imports():\n    import aiohttp.web\n"
            "import frozenlist, aiosignal\n"
            "signal = aiosignal.Signal(owner=None)\nsignal.append(len)\nsignal.freeze()\n"
            "try:\n    signal.append(len)\n    frozen = False\nexcept RuntimeError:\n    frozen = True\n"
            "maps = open('/proc/self/maps').read()\n"
            "print(json.dumps({'python': frozenlist.FrozenList is frozenlist.PyFrozenList, "
            "'cpp': 'libstdc++' in maps, 'frozen': frozen, 'items': list(signal) == [len], "
            "'env': os.environ.get('FROZENLIST_NO_EXTENSIONS')}))") % (before,)
    got = _run(code, env)
    assert got == {"python": True, "cpp": False, "frozen": True, "items": True, "env": before}


def test_the_daemon_loads_no_decimal_statistics_or_toml_parser() -> None:
    """Quantities are exact integer ratios, the link median is local and the --config parser is
    imported when a file is read: ~0.7 MB of RSS an idle agent does not use."""
    code = ("import json, sys\nfrom peer.runtime.lazyimport import lean_imports\n"
            "with lean_imports():\n    import peer.agent, peer.cli.agentcmd\n"
            "print(json.dumps({'loaded': [m for m in ('decimal', 'statistics', 'fractions', 'tomllib') "
            "if m in sys.modules]}))")
    assert _run(code) == {"loaded": []}


def test_the_daemon_runs_with_click_forgotten() -> None:
    """`roam agent` parses its flags with click, then forgets it before the daemon imports its
    runtime (peer.cli.main): its classes are collected, and typing's registry of overload stubs,
    which held click's module globals, is empty (peer.cli.daemon._forget_overloads)."""
    code = ("import json, sys, typing, weakref\n"
            "import peer.cli, peer.cli.daemon as daemon\n"
            "@typing.overload\ndef f(x: int) -> int: ...\n"
            "@typing.overload\ndef f(x: str) -> str: ...\n"
            "def f(x): return x\n"
            "seen = {}\n"
            "def fake(flags):\n"
            "    before = len(typing.get_overloads(f))\n"
            "    daemon._forget_overloads()\n"
            "    seen.update(name=flags.name, join=flags.join, click=[m for m in sys.modules if m.split('.')[0] == 'click'],\n"
            "                agentcmd='peer.cli.agentcmd' in sys.modules, command_alive=command() is not None,\n"
            "                overloads=[before, len(typing.get_overloads(f))])\n"
            "    return 3\n"
            "daemon.run_agent = fake\n"
            "import click.core\ncommand = weakref.ref(click.core.Command)\ndel click\n"
            "code = peer.cli.main(['agent', '--name', 'c1', '--addr', '127.0.0.1', '--join', '127.0.0.2'])\n"
            "print(json.dumps({'code': code, **seen}))")
    got = _run(code)
    assert got == {"code": 3, "name": "c1", "join": ["127.0.0.2"], "click": [], "agentcmd": False,
                   "command_alive": False, "overloads": [2, 0]}
