"""Value types shared by every layer. This module imports nothing from silo."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


class SdkTrees(Protocol):
    """The boto3 and botocore a Python runtime ships (silo.store.sdk.RuntimeSdk)."""

    def directory(self, runtime: str) -> Path:
        """The read-only tree environments of `runtime` see, built at its first use."""
        ...


@dataclass(frozen=True, slots=True)
class EnvKey:
    """Which environments may serve an invocation: one function version, one tenant (or none)."""

    function_arn: str
    version: str
    tenant_id: str | None


class EnvState(enum.Enum):
    """Life of an environment. It never goes back to STEM and never changes tenant."""

    STARTING = "starting"
    STEM = "stem"
    IDLE = "idle"
    BUSY = "busy"
    DEAD = "dead"


@dataclass(frozen=True, slots=True)
class CredentialsSetting:
    """silo's `Credentials` setting of a function, as checked: which providers vend credentials of its own to
    each tenant's environments once they are bound, and for how long each lasts (None: that provider is off)."""

    sts_duration_s: int | None = None  # AssumeRole of the function's Role, per tenant
    sts_session_policy: str | None = None  # a template: `${TenantId}` stands for the tenant id
    token_duration_s: int | None = None  # a JWT signed by silo naming the tenant
    token_audience: str | None = None  # its `aud`; None: silo's default
    postgres: PostgresSetting | None = None  # a login role per tenant in the user's PostgreSQL


@dataclass(frozen=True, slots=True)
class PostgresSetting:
    """The `Postgres` member of the Credentials setting: the database each tenant's login role is made in, the
    base role it inherits, its connection limit, and how long its password lasts."""

    database: str
    base_role: str
    connection_limit: int
    duration_s: int


@dataclass(frozen=True, slots=True)
class FunctionSpec:
    """What it takes to start and drive an environment of one function version."""

    function_name: str
    function_arn: str
    version: str
    revision_id: str
    runtime: str
    handler: str
    code_dir: Path
    memory_mb: int
    timeout_s: int
    ephemeral_mb: int
    environment: dict[str, str]
    per_tenant: bool
    log_format: str = "Text"
    log_group: str = ""
    application_log_level: str | None = None  # LoggingConfig's levels, set only with the JSON format
    system_log_level: str | None = None
    region: str = "us-east-1"
    sandbox: str = "default"  # silo's own setting: which backend runs the environments
    network: str = "none"  # silo's own setting: "none" (loopback only) or "outbound"
    host_services: tuple[str, ...] = ()  # silo's own setting: host loopback ports it may reach ("127.0.0.1:5432")
    reserved_concurrency: int | None = None
    tenant_max_concurrency: int | None = None  # silo's own per-tenant caps; None: no cap
    tenant_max_environments: int | None = None
    role: str = ""  # the execution role's ARN, which the STS provider assumes for each tenant
    credentials: CredentialsSetting | None = None  # silo's own setting; None: no per-tenant credentials
    opt_dir: Path | None = None  # the function's layers merged in order, shown read-only at /opt; None: no layers
    sdk: SdkTrees | None = None  # the Python runtime's boto3 and botocore, shown read-only; None: none


@dataclass(slots=True)
class Invocation:
    """One call of a function as the runtime will receive it."""

    request_id: str
    payload: bytes
    tenant_id: str | None
    invoked_arn: str
    client_context: str | None = None
    want_log_tail: bool = False
    caller_key: str | None = None  # the id of the caller key that sent it, recorded with its START line


class FunctionError(enum.Enum):
    """How the call failed inside the function, as `X-Amz-Function-Error` reports it."""

    UNHANDLED = "Unhandled"


class ColdStart(enum.Enum):
    """How the environment that served a call came to be."""

    WARM = "warm"
    STEM = "stem"  # a pre-initialised environment bound to the tenant on its first call
    FORK = "fork"  # forked from a pre-initialised template
    FULL = "full"  # a runtime started from nothing


@dataclass(slots=True)
class InvocationResult:
    """The function's answer: its payload, or an error payload with `function_error` set."""

    payload: bytes
    function_error: FunctionError | None = None
    executed_version: str = "$LATEST"
    log_tail: bytes = b""
    cold_start: ColdStart = ColdStart.WARM
    init_duration_ms: float | None = None
    duration_ms: float = 0.0
    extra: dict[str, str] = field(default_factory=dict)


# Lambda's tenant id: a header value of this pattern and length (api/invoke.py checks calls with it, the
# keys' service the tenant a key is bound to).
TENANT_ID_MAX = 256
TENANT_ID_PATTERN = r"[a-zA-Z0-9\._:\/=+\-@ ]+"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who sent a request, as authentication found it: the caller key's id, and what the key may do.

    An administrator key may do everything, and invoke as any tenant. A tenant-bound key may only invoke
    `functions` (names), only as `tenant`. `key_id` is None when the server runs without authentication."""

    key_id: str | None
    admin: bool
    tenant: str | None = None
    functions: frozenset[str] = frozenset()
