"""Workload policy: which services a cluster agrees to run or route (DESIGN "Trust between clusters").

In a federation of several operators a replicated descriptor must not be run as given: one
compromised cluster could otherwise make every other one run any command. Each cluster says
what it accepts, and every way a descriptor enters it (a deploy, a replication for a
migration, a fail-safe redeploy, an entry frontend opened, a record saying a copy runs here)
asks `check` first; a refusal names its rule and changes nothing.

The rules, each off (accepting everything) until configured:
* **accept-from**: the homes (HCs, `record.home`) whose services this cluster takes. A service
  homed here is always accepted: its operator deployed it here.
* **allow-command**: argv[0] must lie under one of these path prefixes *after resolution*: a
  bare name is looked up on PATH as the process driver would, then symlinks and `..` are
  resolved (`os.path.realpath`), so `/usr/bin/../../tmp/x` or a symlink in an allowed dir
  pointing elsewhere does not pass. Prefixes are resolved once at start-up the same way
  (Debian's `/bin` is `/usr/bin`). Matching is by whole path components: `/opt/app` allows
  `/opt/app/run`, not `/opt/apple`. Only argv[0] is judged: allowing an interpreter allows
  any script it is given.
* **allow-image**: the image reference must start with one of these registry prefixes, again
  at a component boundary (`/`, `:` or `@`), after Docker Hub's implicit names are spelled
  out (`nginx` is `docker.io/library/nginx`), so `registry.example.com.evil.io/x` does not
  pass a `registry.example.com` prefix.

`check` is pure (the resolver is passed in) and property-tested; `resolve_executable` is the
resolver the agent uses.
"""
from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

RULE_ACCEPT_FROM = "accept-from"
RULE_ALLOW_COMMAND = "allow-command"
RULE_ALLOW_IMAGE = "allow-image"
RULES = (RULE_ACCEPT_FROM, RULE_ALLOW_COMMAND, RULE_ALLOW_IMAGE)

Resolver = Callable[[str], "str | None"]


@dataclass(frozen=True)
class WorkloadPolicy:
    """What this cluster runs. `accept_from` None: every home; empty prefixes: any command/image."""

    accept_from: frozenset[str] | None = None
    allow_commands: tuple[str, ...] = ()
    allow_images: tuple[str, ...] = ()

    @property
    def permissive(self) -> bool:
        return self.accept_from is None and not self.allow_commands and not self.allow_images

    def as_api(self) -> dict[str, Any]:
        return {"accept_from": None if self.accept_from is None else sorted(self.accept_from),
                "allow_command": list(self.allow_commands), "allow_image": list(self.allow_images)}


@dataclass(frozen=True)
class Refusal:
    """Why a descriptor is refused: the rule, a message naming the offending value, the value."""

    rule: str
    message: str
    value: str

    @property
    def field(self) -> str | None:
        return {RULE_ALLOW_COMMAND: "command", RULE_ALLOW_IMAGE: "image"}.get(self.rule)

    def as_api(self) -> dict[str, Any]:
        return {"error": self.message, "rule": self.rule, "value": self.value}


def check(policy: WorkloadPolicy, *, here: str, home: str, command: Sequence[str], image: str | None,
          resolve: Resolver) -> Refusal | None:
    """The first rule the service breaks, or None if this cluster may run and route it."""
    if policy.accept_from is not None and home != here and home not in policy.accept_from:
        return Refusal(RULE_ACCEPT_FROM, f"{here} does not accept services homed at {home!r} "
                       f"(accept-from: {', '.join(sorted(policy.accept_from)) or 'only its own'})", home)
    if policy.allow_commands and command:
        resolved = resolve(command[0])
        if resolved is None:
            return Refusal(RULE_ALLOW_COMMAND, f"command {command[0]!r} cannot be resolved to an absolute path "
                           f"(allow-command is set: give an absolute path or a name on PATH)", command[0])
        if not any(path_under(resolved, prefix) for prefix in policy.allow_commands):
            return Refusal(RULE_ALLOW_COMMAND, f"command {command[0]!r} (resolved {resolved}) is not under an "
                           f"allowed prefix ({', '.join(policy.allow_commands)})", command[0])
    if policy.allow_images and image is not None:
        full = normalise_image(image)
        if not any(image_under(full, normalise_prefix(p)) for p in policy.allow_images):
            return Refusal(RULE_ALLOW_IMAGE, f"image {image!r} is not from an allowed registry prefix "
                           f"({', '.join(policy.allow_images)})", image)
    return None


def path_under(path: str, prefix: str) -> bool:
    """`path` is `prefix` or lies inside it, by whole components (both absolute and normalised)."""
    if not path.startswith("/") or not prefix.startswith("/"):
        return False
    if prefix == "/":
        return True
    base = prefix.rstrip("/")
    return path == base or path.startswith(base + "/")


def normalise_image(ref: str) -> str:
    """Spell out Docker Hub's implicit registry and `library/` namespace, as the runtime does."""
    ref = ref.strip()
    first, sep, rest = ref.partition("/")
    if not sep or not ("." in first or ":" in first or first == "localhost"):
        first, rest = "docker.io", ref  # no registry component: Docker Hub
    if first == "index.docker.io":
        first = "docker.io"
    if first == "docker.io" and rest and "/" not in rest.split(":")[0].split("@")[0]:
        rest = f"library/{rest}"
    return f"{first}/{rest}" if rest else first


def normalise_prefix(prefix: str) -> str:
    """A prefix is normalised like an image, except that a lone host (`registry.example.com`,
    `localhost:5000`) names a registry, not a Docker Hub repository."""
    head = prefix.split("/", 1)[0]
    if "/" not in prefix.rstrip("/") and ("." in head or head.split(":")[0] == "localhost"):
        return prefix.rstrip("/")
    return normalise_image(prefix)


def image_under(image: str, prefix: str) -> bool:
    """`image` starts with `prefix` at a component boundary (`/`, `:`, `@` or the end)."""
    if not prefix:
        return False
    if prefix.endswith(("/", ":", "@")):
        return image.startswith(prefix)
    return image == prefix or any(image.startswith(prefix + sep) for sep in "/:@")


# -- the resolver the agent uses (filesystem access) ---------------------------------------------

def resolve_executable(arg0: str, *, path: str | None = None) -> str | None:
    """argv[0] as the process driver would execute it, as a resolved absolute path: a bare name
    through PATH, then every symlink and `..` resolved. None for a relative path with a slash
    (it would depend on the working directory) or a name not found on PATH."""
    if "\x00" in arg0 or not arg0:
        return None
    if "/" not in arg0:
        found = shutil.which(arg0, path=path)
        if found is None:
            return None
        arg0 = found
    if not arg0.startswith("/"):
        return None
    return os.path.realpath(arg0)


def resolve_lexical(arg0: str) -> str | None:
    """For a driver whose commands run elsewhere (in a container): `..` removed, no symlinks known."""
    if not arg0.startswith("/") or "\x00" in arg0:
        return None
    return os.path.normpath(arg0).replace("//", "/")
