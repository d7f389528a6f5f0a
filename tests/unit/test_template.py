"""The template protocol, from the daemon's side: forks, exit statuses, draining; and which environments
a template may fork at all. The jail's own steps are tested through the server (tests/security)."""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from silo.jail.spec import JailSpec
from silo.sandbox.base import LaunchSpec
from silo.sandbox.jail import EXEC_TEMPLATE, TEMPLATE_ENTRY, template_key
from silo.sandbox.template import Template, TemplateCommand, Templates, TemplateUnavailable

T = TypeVar("T")


def launch_spec(runtime: str, environ: dict[str, str]) -> LaunchSpec:
    return LaunchSpec("e1", runtime, environ, Path("/nonexistent"), 128, 512)


def test_template_key_follows_what_a_fork_can_honour() -> None:
    assert template_key(launch_spec("provided.al2023", {"PYTHONHASHSEED": "0", "LD_PRELOAD": "x"})) == EXEC_TEMPLATE
    assert template_key(launch_spec("python3.11", {"PYTHONPATH": "/opt", "PYTHONUNBUFFERED": "1"})) == "python3.11"
    for name in ("PYTHONHASHSEED", "PYTHONWARNINGS", "PYTHONDEVMODE", "LD_PRELOAD", "LD_LIBRARY_PATH"):
        assert template_key(launch_spec("python3.11", {name: "1"})) is None, name


def test_layers_with_shared_libraries_are_never_forked(tmp_path: Path) -> None:
    """The dynamic loader reads LD_LIBRARY_PATH once, at start: a fork would never find /opt/lib."""
    (tmp_path / "python").mkdir()
    with_python = LaunchSpec("e1", "python3.11", {}, Path("/nonexistent"), 128, 512, opt_dir=tmp_path)
    assert template_key(with_python) == "python3.11"
    (tmp_path / "lib").mkdir()
    assert template_key(with_python) is None


def failing_spec(tmp_path: Path) -> bytes:
    """A spec whose second step fails (its cgroups do not exist), so a fork reports and exits at once."""
    return JailSpec(
        env_id="e1",
        argv=["/bin/true"],
        environ={},
        uid=65534,
        gid=65534,
        root_dir=str(tmp_path / "root"),
        binds=[],
        tmp_mb=1,
        cgroups={"memory": str(tmp_path / "no-such-group")},
    ).encode()


async def fork_once(template: Template, tmp_path: Path) -> tuple[int, bytes]:
    spec_r, spec_w = os.pipe()
    os.write(spec_w, failing_spec(tmp_path))
    os.close(spec_w)
    out_r, out_w = os.pipe()
    control, control_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        child = await template.fork(spec_r, control_child.fileno(), out_w)
        code = await asyncio.wait_for(child.wait(), 10)
        control.setblocking(False)
        return code, await asyncio.get_running_loop().sock_recv(control, 4096)
    finally:
        for fd in (spec_r, out_w, out_r):
            os.close(fd)
        control_child.close()
        control.close()


async def eventually(probe: Callable[[], T], tries: int = 100) -> T:
    """`probe()` once it is true (polled every 50 ms), or its last value."""
    for _ in range(tries):
        value = probe()
        if value:
            return value
        await asyncio.sleep(0.05)
    return probe()


def command() -> TemplateCommand:
    return TemplateCommand([sys.executable, "-S", "-B", "-c", TEMPLATE_ENTRY])


def test_a_fork_reports_its_step_and_its_exit_even_past_descriptor_1024(tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 2048:
        pytest.skip("the descriptor limit is too low to hand over descriptors past 1024")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 2048), hard))
    # A daemon with many environments has many descriptors open: what it hands a template is numbered high.
    filler = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]

    async def scenario() -> None:
        template = await Template.start("exec", command())
        try:
            for _ in range(3):
                code, message = await fork_once(template, tmp_path)
                assert code == 126
                assert message.startswith(b"error join cgroups:"), message
            assert template.forks == 3 and template.children == 0
        finally:
            template.kill()

    try:
        asyncio.run(scenario())
    finally:
        for fd in filler:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_drained_template_forks_no_more_and_ends(tmp_path: Path) -> None:
    async def scenario() -> None:
        template = await Template.start("exec", command())
        await fork_once(template, tmp_path)
        template.drain()
        with pytest.raises(TemplateUnavailable):
            await fork_once(template, tmp_path)
        assert await eventually(lambda: not template.alive), "a drained template with no environments left ends"

    asyncio.run(scenario())


def test_templates_are_started_on_first_need_and_replaced_after_max_forks(tmp_path: Path) -> None:
    async def scenario() -> None:
        templates = Templates(lambda key: command(), max_forks=2)
        try:
            assert templates.ready("exec") is None, "the first need starts one; that launch starts from nothing"
            first = await eventually(lambda: templates.ready("exec"))
            assert first is not None
            for _ in range(2):
                await fork_once(first, tmp_path)
            assert templates.ready("exec") is first, "the old one forks on while its replacement starts"
            assert await eventually(lambda: templates.ready("exec") is not first)
            current = templates.ready("exec")
            assert current is not None and current is not first
            assert await eventually(lambda: not first.alive), "the replaced template, drained, ended"
        finally:
            await templates.close()

    asyncio.run(scenario())


def test_an_environment_is_named_by_its_fork_not_by_a_pid_that_comes_back(monkeypatch: pytest.MonkeyPatch) -> None:
    from silo.jail import template as jailed

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    template = jailed.Template(theirs, runtime_loaded=False)
    try:

        def launched(serial: bytes, runtime: int) -> int:
            report_r, report_w = os.pipe()
            os.write(report_w, str(runtime).encode())
            os.close(report_w)
            gone_r, gone_w = os.pipe()
            os.set_blocking(gone_r, False)
            template.launchers[4242] = (serial, report_r, gone_w)
            return gone_r

        # What the kernel reports, in order: the first launcher (pid 4242) leaves after forking pid 1 (5000);
        # a second fork's launcher gets pid 4242 again and leaves after forking 6000; then 5000 ends.
        ended: list[tuple[int, int]] = []
        monkeypatch.setattr(jailed.os, "waitpid", lambda pid, flags: ended.pop(0) if ended else (0, 0))
        gone = launched(b"1", 5000)
        template.reap()
        with pytest.raises(BlockingIOError):
            os.read(gone, 1)  # pid 1 must not arm its death signal while its launcher is not reaped
        ended.append((4242, 0))
        template.reap()
        assert os.read(gone, 1) == b"", "once the launcher is reaped, pid 1 may arm it (its parent is the template)"
        os.close(gone)
        os.close(launched(b"2", 6000))
        ended.append((4242, 0))
        template.reap()
        ended.append((5000, 9))  # killed by SIGKILL
        template.reap()
        assert ours.recv(64) == b"exit 1 -9", "the first environment ended, whatever pid its launcher had"
        assert template.runtimes == {6000: b"2"}
    finally:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for sock in (ours, theirs, template.wake_r, template.wake_w):
            sock.close()


def test_filling_the_holes_leaves_free_blocks_only_in_fresh_pools() -> None:
    """From 144 bytes up, where the filling's own passing objects do not land: once filled, a size has no
    free block, or a pool of its own that objects made since have only begun (CPython's pools are 16 KiB
    with a 48-byte header)."""
    from silo.jail.template import fill_holes, pool_free_blocks

    def scattered(free: dict[int, int]) -> dict[int, int]:
        return {size: n for size, n in free.items() if size >= 144 and not (n == 0 or n >= (16384 - 48) // size - 4)}

    before = scattered(pool_free_blocks())
    assert before, "no holes to fill in this interpreter: the test would prove nothing"
    kept = fill_holes()
    assert scattered(pool_free_blocks()) == {}
    assert kept
