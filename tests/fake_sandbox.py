"""A backend for tests below the server that breaks on demand, the way a host breaks.

`BrokenHost` runs environments as the development backend does (real processes, silo's own runtime), and
while `failing` names one of the jail's steps every launch raises LaunchFailed as the jail does when that
step fails. Setting `failing` to None heals it.
"""

from __future__ import annotations

from pathlib import Path

from silo.sandbox.base import LaunchFailed, LaunchSpec, SandboxProcess
from silo.sandbox.process import ProcessSandbox


class BrokenHost:
    name = "broken-host"
    isolates = True  # it stands for the jail; what it runs is not isolated, which no test here needs

    def __init__(self, env_root: Path, failing: str | None = "join cgroups") -> None:
        self.failing = failing
        self.launches = 0
        self._real = ProcessSandbox(env_root)

    async def launch(self, spec: LaunchSpec) -> SandboxProcess:
        self.launches += 1
        if self.failing is not None:
            raise LaunchFailed(
                f"environment {spec.env_id}: error {self.failing}: [Errno 28] No space left on device: "
                f"'/sys/fs/cgroup/memory/silo/0/{spec.env_id}/tasks'"
            )
        return await self._real.launch(spec)

    def warm(self, runtimes: set[str]) -> None:
        """No templates: nothing to start ahead."""

    def ready(self) -> str | None:
        return None

    async def close(self) -> None:
        await self._real.close()
