"""Settings of a silo server: flags win over `SILO_*` environment variables, which win over defaults."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

ENV_PREFIX = "SILO_"


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 9700
    data_dir: Path = Path(".silo")
    region: str = "us-east-1"
    account_id: str = "000000000000"
    sandbox: str = "auto"
    log_level: str = "info"
    log_retention_mb: int = 64  # stored log events per function; the oldest go first past it
    metrics_tenant_labels: bool = False  # a `tenant` label on per-call metrics (one series per tenant)
    account_concurrency: int = 1000
    memory_budget_mb: int = 0  # 0: three quarters of the host's memory
    keep_alive_s: int = 600  # how long an idle environment lives
    queue_wait_ms: int = 2000  # how long a call may wait its turn when the shared pool is full
    stems_per_function: int = 8  # environments initialised ahead for new tenants; 0: none
    # Environments forked by one template (it shares its hash seed and memory layout with them) before
    # a fresh template replaces it; 0: no templates, every environment starts from nothing.
    template_max_forks: int = 256
    async_concurrency: int = 64  # asynchronous events running at once, at most
    async_retry_base_ms: int = 60000  # wait before an async event's first retry; the second waits twice as long
    # The HTTP front (docs/security.md, "The HTTP front"): connections open at once, in all and from one
    # client address (an IPv6 /64; loopback counts like any other; 0: no cap per address, as behind a proxy),
    # seconds a request's head may take, the window over which a body must keep up 512 bytes a second,
    # and how long an idle keep-alive connection stays open.
    http_max_connections: int = 10000
    http_max_connections_per_address: int = 256
    http_head_timeout_s: int = 20
    http_body_timeout_s: int = 20
    http_idle_s: int = 30

    @property
    def db_path(self) -> Path:
        return self.data_dir / "silo.db"

    @property
    def code_dir(self) -> Path:
        return self.data_dir / "code"

    @property
    def env_dir(self) -> Path:
        return self.data_dir / "environments"


def _coerce(name: str, raw: str) -> Any:
    default = getattr(Settings(), name)
    if isinstance(default, bool):
        return raw.lower() in ("1", "true", "yes", "on")
    if isinstance(default, int):
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"{ENV_PREFIX}{name.upper()} must be a whole number, got {raw!r}") from None
    if isinstance(default, Path):
        return Path(raw)
    return raw


def load_settings(flags: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Settings:
    """Build the settings: a flag given on the command line, else `SILO_<NAME>`, else the default."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in fields(Settings):
        flag = flags.get(f.name)
        if flag is not None:
            values[f.name] = flag if not isinstance(flag, str) else _coerce(f.name, flag)
        elif ENV_PREFIX + f.name.upper() in environ:
            values[f.name] = _coerce(f.name, environ[ENV_PREFIX + f.name.upper()])
    settings = replace(Settings(), **values)
    return replace(settings, data_dir=settings.data_dir.resolve())
