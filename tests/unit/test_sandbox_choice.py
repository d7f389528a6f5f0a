"""Which backend runs the environments: silo fails closed. `auto` takes the jail, else gVisor, else refuses to
start saying why; the unisolated backend runs only when named and says so; a seccomp policy that cannot be
used refuses the start of every isolating backend."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from silo.config import Settings
from silo.jail import seccomp
from silo.sandbox import choice
from silo.sandbox.base import Sandbox, SandboxUnavailable
from silo.sandbox.choice import choose, make_sandbox
from silo.sandbox.jail import JailSandbox
from silo.sandbox.process import ProcessSandbox


class Backend:
    """A backend that can run here (nothing of it is started)."""

    isolates = True

    def __init__(self, name: str) -> None:
        self.name = name


def unavailable(why: str) -> choice.Factory:
    def build() -> Sandbox:
        raise SandboxUnavailable(why)

    return build


def available(name: str) -> choice.Factory:
    return lambda: Backend(name)  # type: ignore[return-value]


def test_auto_takes_the_jail_when_it_can_run() -> None:
    chosen = choose("auto", {"jail": available("jail"), "gvisor": unavailable("no runsc")})
    assert chosen.name == "jail"


def test_auto_takes_gvisor_when_the_jail_cannot_run_and_says_why(caplog: pytest.LogCaptureFixture) -> None:
    chosen = choose("auto", {"jail": unavailable("no cgroups here"), "gvisor": available("gvisor")})
    assert chosen.name == "gvisor"
    assert "the jail backend cannot run here (no cgroups here)" in caplog.text


def test_auto_refuses_to_start_when_no_isolating_backend_can_run() -> None:
    with pytest.raises(SandboxUnavailable) as refused:
        choose("auto", {"jail": unavailable("the jail needs root"), "gvisor": unavailable("gvisor needs runsc")})
    message = str(refused.value)
    assert "jail: the jail needs root" in message and "gvisor: gvisor needs runsc" in message, "each check that failed"
    assert "--sandbox process" in message and "no isolation" in message, "what to do, and what that costs"
    assert "run silo as root" in message


def test_a_named_backend_that_cannot_run_refuses_the_start_and_no_other_is_tried() -> None:
    with pytest.raises(SandboxUnavailable, match=r"the gvisor backend .* cannot run here.*needs runsc"):
        choose("gvisor", {"jail": available("jail"), "gvisor": unavailable("needs runsc")})


def test_auto_refuses_instead_of_falling_back_to_the_unisolated_backend(tmp_path: Path) -> None:
    # Whatever this machine is, a start with an unusable policy refuses: before, `auto` fell back to the
    # process backend whenever the jail could not run.
    policy = tmp_path / "policy.json"
    policy.write_text("")
    with pytest.raises(SystemExit) as refused:
        make_sandbox(Settings(sandbox="auto", data_dir=tmp_path / "data"), policy)
    assert "seccomp policy" in str(refused.value.code) and "never run without one" in str(refused.value.code)
    assert not (tmp_path / "data" / "environments").exists(), "no backend was built"


@pytest.mark.parametrize("backend", ["auto", "jail", "gvisor"])
def test_an_empty_seccomp_policy_refuses_to_start(tmp_path: Path, backend: str) -> None:
    empty = tmp_path / "empty.json"
    empty.write_text("")
    with pytest.raises(SystemExit, match="cannot be used"):
        make_sandbox(Settings(sandbox=backend, data_dir=tmp_path / "data"), empty)


def test_a_policy_that_denies_nothing_refuses_to_start(tmp_path: Path) -> None:
    document = json.loads(seccomp.DEFAULT_POLICY.read_text())
    document["rules"] = []
    policy = tmp_path / "allow-all.json"
    policy.write_text(json.dumps(document))
    with pytest.raises(SystemExit, match="denies nothing"):
        make_sandbox(Settings(sandbox="jail", data_dir=tmp_path / "data"), policy)


def test_a_policy_that_does_not_compile_refuses_to_start(tmp_path: Path) -> None:
    document = json.loads(seccomp.DEFAULT_POLICY.read_text())
    document["rules"][0]["action"] = "deny"
    policy = tmp_path / "broken.json"
    policy.write_text(json.dumps(document))
    with pytest.raises(SystemExit, match="unknown action"):
        make_sandbox(Settings(sandbox="auto", data_dir=tmp_path / "data"), policy)


def test_the_jail_refuses_an_empty_seccomp_filter(tmp_path: Path) -> None:
    with pytest.raises(SandboxUnavailable, match="empty seccomp filter"):
        JailSandbox(tmp_path / "envs", b"")


def test_the_unisolated_backend_runs_when_named_and_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        sandbox = make_sandbox(Settings(sandbox="process", data_dir=tmp_path))
    assert isinstance(sandbox, ProcessSandbox) and not sandbox.isolates
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("does NOT isolate tenants" in w for w in warnings), warnings
