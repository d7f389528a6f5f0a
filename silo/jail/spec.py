"""What the jail needs to build one environment, passed from the daemon to the jail."""

from __future__ import annotations

import marshal
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True, slots=True)
class Bind:
    """A host path made visible inside the environment, read-only unless `writable`."""

    source: str
    target: str
    writable: bool = False


@dataclass(frozen=True, slots=True)
class JailSpec:
    env_id: str
    argv: list[str]
    environ: dict[str, str]
    uid: int
    gid: int
    root_dir: str
    binds: list[Bind]
    tmp_mb: int
    cgroups: dict[str, str]
    cwd: str = "/var/task"
    hostname: str = "silo"
    runtime_api_port: int = 9001
    seccomp_filter: str = ""  # hex of the compiled BPF program; the jail refuses to finish without one
    etc_files: dict[str, str] = field(default_factory=dict)
    # Outbound network: the environment's address with its prefix on eth0, and its default route.
    # Empty: loopback only. The daemon creates eth0 once the jail hands it the namespace (see enter.py).
    address: str = ""
    gateway: str = ""
    # Forked from a template (see template.py): run silo's built-in Python runtime in the template's
    # interpreter instead of exec'ing argv.
    in_process: bool = False

    def encode(self) -> bytes:
        """For the jail, which reads it with `marshal` (built in: no import on every environment's start)."""
        return marshal.dumps(asdict(self))
