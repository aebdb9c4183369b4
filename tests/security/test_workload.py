"""The workload policy (peer.trust.workload): table of cases, properties, and the real resolver on
a real directory tree with symlinks and `..`."""
from __future__ import annotations

import os
import posixpath
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peer.trust.workload import (
    RULE_ACCEPT_FROM,
    RULE_ALLOW_COMMAND,
    RULE_ALLOW_IMAGE,
    RULES,
    WorkloadPolicy,
    check,
    image_under,
    normalise_image,
    normalise_prefix,
    path_under,
    resolve_executable,
    resolve_lexical,
)


def lexical(arg0: str) -> str | None:
    return resolve_lexical(arg0)


def rule(policy: WorkloadPolicy, *, home: str = "c2", command: tuple[str, ...] = (), image: str | None = None,
         here: str = "c1") -> str | None:
    refusal = check(policy, here=here, home=home, command=command, image=image, resolve=lexical)
    return None if refusal is None else refusal.rule


# (policy, home, command, image, expected rule or None)
CASES: list[tuple[WorkloadPolicy, str, tuple[str, ...], str | None, str | None]] = [
    (WorkloadPolicy(), "anyone", ("/tmp/evil",), "evil.io/x", None),
    (WorkloadPolicy(accept_from=frozenset({"c2"})), "c2", (), None, None),
    (WorkloadPolicy(accept_from=frozenset({"c2"})), "c3", (), None, RULE_ACCEPT_FROM),
    (WorkloadPolicy(accept_from=frozenset()), "c1", (), None, None),  # its own services, always
    (WorkloadPolicy(accept_from=frozenset()), "c2", (), None, RULE_ACCEPT_FROM),
    (WorkloadPolicy(allow_commands=("/usr/bin",)), "c2", ("/usr/bin/python3",), None, None),
    (WorkloadPolicy(allow_commands=("/usr/bin",)), "c2", ("/usr/bin",), None, None),
    (WorkloadPolicy(allow_commands=("/usr/bin",)), "c2", ("/usr/binx/sh",), None, RULE_ALLOW_COMMAND),
    (WorkloadPolicy(allow_commands=("/usr/bin",)), "c2", ("/usr/bin/../../tmp/x",), None, RULE_ALLOW_COMMAND),
    (WorkloadPolicy(allow_commands=("/usr/bin",)), "c2", ("/usr/bin/./../bin/sh",), None, None),
    (WorkloadPolicy(allow_commands=("/usr/bin",)), "c2", ("./sh",), None, RULE_ALLOW_COMMAND),
    (WorkloadPolicy(allow_commands=("/usr/bin",)), "c2", ("sh",), None, RULE_ALLOW_COMMAND),  # lexical: no PATH
    (WorkloadPolicy(allow_commands=("/opt/app/",)), "c2", ("/opt/app/run",), None, None),
    (WorkloadPolicy(allow_commands=("/opt/app",)), "c2", ("/opt/apple/run",), None, RULE_ALLOW_COMMAND),
    (WorkloadPolicy(allow_commands=("/usr/bin",)), "c2", (), "nginx", None),  # no command: nothing to judge
    (WorkloadPolicy(allow_images=("registry.example.com",)), "c2", (), "registry.example.com/team/app:1", None),
    (WorkloadPolicy(allow_images=("registry.example.com",)), "c2", (), "registry.example.com.evil.io/app",
     RULE_ALLOW_IMAGE),
    (WorkloadPolicy(allow_images=("registry.example.com/team",)), "c2", (), "registry.example.com/teamx/a",
     RULE_ALLOW_IMAGE),
    (WorkloadPolicy(allow_images=("docker.io/library/",)), "c2", (), "nginx:1.25", None),
    (WorkloadPolicy(allow_images=("docker.io/library/",)), "c2", (), "someone/nginx", RULE_ALLOW_IMAGE),
    (WorkloadPolicy(allow_images=("nginx",)), "c2", (), "docker.io/library/nginx@sha256:" + "a" * 64, None),
    (WorkloadPolicy(allow_images=("ghcr.io/org",)), "c2", ("/tmp/x",), None, None),  # no image: nothing to judge
    # accept-from is judged first, then the command, then the image
    (WorkloadPolicy(accept_from=frozenset({"c9"}), allow_commands=("/usr",)), "c2", ("/tmp/x",), None,
     RULE_ACCEPT_FROM),
    (WorkloadPolicy(allow_commands=("/usr",), allow_images=("ghcr.io",)), "c2", ("/tmp/x",), "evil.io/x",
     RULE_ALLOW_COMMAND),
]


@pytest.mark.parametrize(("policy", "home", "command", "image", "expected"), CASES)
def test_table(policy: WorkloadPolicy, home: str, command: tuple[str, ...], image: str | None,
               expected: str | None) -> None:
    assert rule(policy, home=home, command=command, image=image) == expected


def test_refusal_names_rule_value_and_field() -> None:
    refusal = check(WorkloadPolicy(allow_commands=("/usr/bin",)), here="c1", home="c2", command=("/tmp/x", "a"),
                    image=None, resolve=lexical)
    assert refusal is not None
    assert refusal.as_api() == {"error": refusal.message, "rule": "allow-command", "value": "/tmp/x"}
    assert refusal.field == "command" and "/tmp/x" in refusal.message and "/usr/bin" in refusal.message


segment = st.sampled_from(["a", "b", "..", ".", "bin", "x y", ""])
names = st.from_regex(r"[a-z][a-z0-9]{0,5}", fullmatch=True)


@given(home=names, here=names, command=st.lists(st.text(max_size=8), max_size=3),
       image=st.none() | st.text(max_size=20))
def test_no_policy_accepts_everything(home: str, here: str, command: list[str], image: str | None) -> None:
    assert check(WorkloadPolicy(), here=here, home=home, command=command, image=image, resolve=lexical) is None


@given(here=names, homes=st.frozensets(names, max_size=3), command=st.lists(st.text(max_size=8), max_size=3))
def test_own_services_always_pass_accept_from(here: str, homes: frozenset[str], command: list[str]) -> None:
    policy = WorkloadPolicy(accept_from=homes)
    assert check(policy, here=here, home=here, command=command, image=None, resolve=lexical) is None


@given(prefix=st.lists(st.sampled_from(["usr", "bin", "opt", "a"]), min_size=1, max_size=3),
       tail=st.lists(segment, min_size=1, max_size=6))
def test_dot_dot_never_escapes_a_prefix(prefix: list[str], tail: list[str]) -> None:
    """Allowed iff the path, normalised, really lies under the prefix: no `..` trick passes."""
    base = "/" + "/".join(prefix)
    arg0 = base + "/" + "/".join(tail)
    policy = WorkloadPolicy(allow_commands=(base,))
    allowed = rule(policy, command=(arg0,)) is None
    real = posixpath.normpath(arg0)
    assert allowed == (real == base or real.startswith(base + "/"))


@given(path=st.text(alphabet="/ab.", max_size=12), prefix=st.text(alphabet="/ab.", min_size=1, max_size=6))
def test_path_under_is_component_wise(path: str, prefix: str) -> None:
    if path_under(path, prefix):
        base = prefix.rstrip("/")
        assert prefix == "/" or path == base or path[len(base)] == "/"


@given(prefix=st.from_regex(r"[a-z]{1,6}\.(io|com)(/[a-z]{1,5}){0,2}", fullmatch=True),
       suffix=st.from_regex(r"[a-z0-9]{1,5}", fullmatch=True))
def test_image_prefix_needs_a_boundary(prefix: str, suffix: str) -> None:
    assert not image_under(normalise_image(prefix + suffix + "/app"), normalise_prefix(prefix))
    assert image_under(normalise_image(prefix + "/" + suffix), normalise_prefix(prefix))
    if "/" in prefix:  # a tag on a repository
        assert image_under(normalise_image(prefix + ":" + suffix), normalise_prefix(prefix))


@pytest.mark.parametrize(("ref", "full"), [
    ("nginx", "docker.io/library/nginx"), ("nginx:1", "docker.io/library/nginx:1"),
    ("user/app", "docker.io/user/app"), ("index.docker.io/user/app", "docker.io/user/app"),
    ("docker.io/nginx", "docker.io/library/nginx"), ("localhost/app", "localhost/app"),
    ("reg:5000/app", "reg:5000/app"), ("ghcr.io/org/app@sha256:ab", "ghcr.io/org/app@sha256:ab"),
])
def test_normalise_image(ref: str, full: str) -> None:
    assert normalise_image(ref) == full


@given(policy_rules=st.sets(st.sampled_from(RULES)))
def test_every_refusal_names_a_known_rule(policy_rules: set[str]) -> None:
    policy = WorkloadPolicy(accept_from=frozenset({"c9"}) if RULE_ACCEPT_FROM in policy_rules else None,
                            allow_commands=("/nowhere",) if RULE_ALLOW_COMMAND in policy_rules else (),
                            allow_images=("nowhere.io",) if RULE_ALLOW_IMAGE in policy_rules else ())
    got = rule(policy, command=("/tmp/x",), image="evil.io/x")
    assert (got is None) == (not policy_rules)
    assert got is None or got in policy_rules


def test_real_resolver_follows_symlinks_and_dot_dot(tmp_path: Path) -> None:
    """The resolver the agent uses: a symlink inside an allowed dir pointing outside is refused."""
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    allowed.mkdir()
    outside.mkdir()
    payload = outside / "payload"
    payload.write_text("#!/bin/sh\n")
    payload.chmod(0o755)
    good = allowed / "tool"
    good.write_text("#!/bin/sh\n")
    good.chmod(0o755)
    (allowed / "link").symlink_to(payload)
    (allowed / "dirlink").symlink_to(outside)
    policy = WorkloadPolicy(allow_commands=(os.path.realpath(allowed),))

    def judged(arg0: str, path: str | None = None) -> str | None:
        refusal = check(policy, here="c1", home="c2", command=(arg0,), image=None,
                        resolve=lambda a: resolve_executable(a, path=path))
        return None if refusal is None else refusal.rule

    assert judged(str(good)) is None
    assert judged(str(allowed / "link")) == RULE_ALLOW_COMMAND
    assert judged(str(allowed / "dirlink" / "payload")) == RULE_ALLOW_COMMAND
    assert judged(str(allowed / ".." / "outside" / "payload")) == RULE_ALLOW_COMMAND
    assert judged("tool", path=str(allowed)) is None  # a bare name, found on PATH
    assert judged("link", path=str(allowed)) == RULE_ALLOW_COMMAND
    assert judged("missing", path=str(allowed)) == RULE_ALLOW_COMMAND


# -- the accept-from policy as gossiped (`acc` tag) and used by placement ----------------------

def test_accept_from_tag_round_trips_and_a_long_list_is_left_out() -> None:
    from peer.federation.tags import Load, SelfTags, decode_tags

    load = Load(cpu_capacity=8, cpu_used=1, mem_capacity=4096, mem_used=10, slots_capacity=16, slots_used=1)
    assert decode_tags(SelfTags(tier="edge", api_port=7070, load=load).encode()).accepts is None
    tags = SelfTags(tier="edge", api_port=7070, load=load, accepts=frozenset({"c2", "c3"})).encode()
    assert tags["acc"] == "c2,c3" and decode_tags(tags).accepts == frozenset({"c2", "c3"})
    only_own = SelfTags(tier="edge", api_port=7070, load=load, accepts=frozenset()).encode()
    assert decode_tags(only_own).accepts == frozenset()
    many = frozenset(f"cluster-{i:03d}-of-a-long-name" for i in range(40))  # cannot fit in 512 bytes
    assert "acc" not in SelfTags(tier="edge", api_port=7070, load=load, accepts=many).encode()


@given(homes=st.none() | st.frozensets(names, max_size=3), home=st.none() | names, name=names)
def test_placement_skips_a_cluster_whose_gossiped_policy_refuses_the_home(
        homes: frozenset[str] | None, home: str | None, name: str) -> None:
    from placement import ClusterView, Requirements, admit
    from placement.homes import choose_entries

    view = ClusterView(name=name, alive=True, tier="edge", cpu_capacity=8, cpu_used=0, mem_capacity=1 << 30,
                       mem_used=0, slots_capacity=4, slots_used=0, accepts_homes=homes)
    takes = home is None or homes is None or home == name or home in homes
    rejection = admit(Requirements(cpu=0.1, memory=1, home=home), view)
    assert (rejection is None) == takes
    assert rejection is None or rejection.reason.startswith("policy:")
    assert choose_entries([view], chosen=[], tiers=[], count=1, home=home) == ([name] if takes else [])
