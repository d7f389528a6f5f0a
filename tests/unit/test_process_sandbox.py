"""The development backend: a private /tmp per environment, output captured, nothing left after cleanup."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from pathlib import Path

from silo.sandbox.base import LaunchSpec
from silo.sandbox.process import ProcessSandbox

WRITER = """#!/usr/bin/env python3
import os, time
tag = os.environ["TAG"]
open("/tmp/silo-private-" + tag, "w").write(tag)
print("files in /tmp:", sorted(os.listdir("/tmp")), flush=True)
time.sleep(float(os.environ["SLEEP"]))
"""


def launch_spec(tmp_path: Path, tag: str, sleep: float) -> LaunchSpec:
    """A custom runtime whose bootstrap writes into /tmp and lists it."""
    code = tmp_path / "code"
    if not code.exists():
        code.mkdir()
        (code / "bootstrap").write_text(WRITER)
        (code / "bootstrap").chmod(0o755)
    return LaunchSpec(
        env_id=uuid.uuid4().hex,
        runtime="provided.al2023",
        environ={"TAG": tag, "SLEEP": str(sleep)},
        code_dir=code,
        memory_mb=128,
        ephemeral_mb=512,
    )


def read_all(fd: int, deadline: float) -> bytes:
    out = b""
    while time.monotonic() < deadline:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            time.sleep(0.01)
            continue
        if not chunk:
            break
        out += chunk
    return out


def test_each_environment_has_its_own_tmp(tmp_path: Path) -> None:
    async def main() -> None:
        sandbox = ProcessSandbox(tmp_path / "envs")
        a = await sandbox.launch(launch_spec(tmp_path, "a", 0))
        b = await sandbox.launch(launch_spec(tmp_path, "b", 0))
        assert await a.wait() == 0 and await b.wait() == 0
        out_a = read_all(a.output_fd, time.monotonic() + 5)
        out_b = read_all(b.output_fd, time.monotonic() + 5)
        assert b"silo-private-a" in out_a and b"silo-private-b" not in out_a
        assert b"silo-private-b" in out_b and b"silo-private-a" not in out_b
        assert not Path("/tmp/silo-private-a").exists(), "the host's /tmp is untouched"
        await a.cleanup()
        await b.cleanup()
        assert list((tmp_path / "envs").iterdir()) == [], "cleanup removes the environment's directory"

    asyncio.run(main())


def test_kill_stops_a_running_environment(tmp_path: Path) -> None:
    async def main() -> None:
        sandbox = ProcessSandbox(tmp_path / "envs")
        proc = await sandbox.launch(launch_spec(tmp_path, "k", 60))
        assert proc.exit_code is None
        proc.kill()
        assert await asyncio.wait_for(proc.wait(), 10) < 0
        proc.kill()  # a second kill is harmless
        await proc.cleanup()

    asyncio.run(main())
