"""Settings of a silo server: flags win over `SILO_*` environment variables, which win over the config
file (`silo serve --config silo.toml`), which wins over the defaults.

Every setting is one field of `Settings`, with its help text beside it: `silo serve` makes a flag of each
(`--keep-alive-s`), the environment variable is `SILO_` and the name in capitals (`SILO_KEEP_ALIVE_S`),
and the config file's key is the name itself (`keep_alive_s = 600`).
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Mapping
from dataclasses import Field, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar

ENV_PREFIX = "SILO_"
T = TypeVar("T")

# The groups `silo serve --help` lists the settings under, in this order.
SERVER = "server"
SANDBOX = "environments"
LIMITS = "limits"
HTTP = "HTTP front"
ASYNC = "asynchronous invocations"
TELEMETRY = "logs and metrics"
CREDENTIALS = "per-tenant credentials"
GROUPS = (SERVER, SANDBOX, LIMITS, HTTP, ASYNC, TELEMETRY, CREDENTIALS)

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("text", "json")


def setting(default: T, help: str, group: str, choices: tuple[str, ...] = ()) -> T:
    """A field of `Settings` with what `silo serve --help` says of it."""
    value: T = field(default=default, metadata={"help": help, "group": group, "choices": choices})
    return value


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = setting("127.0.0.1", "address to listen on", SERVER)
    port: int = setting(9700, "port to listen on", SERVER)
    data_dir: Path = setting(  # noqa: RUF009 - a Path is immutable, and setting() is dataclasses.field
        Path(".silo"),
        "where state lives: the database, code packages, environments' directories (a relative path is from "
        "the working directory)",
        SERVER,
    )
    auth: str = setting(
        "sigv4",
        "how callers prove who they are: sigv4 (requests signed with AWS Signature Version 4 by a silo key, as "
        "boto3 and the AWS CLI sign them), or none (no authentication: anyone who can reach the port may do "
        "anything as any tenant; local development only, refused unless host is a loopback address)",
        SERVER,
        ("sigv4", "none"),
    )
    region: str = setting("us-east-1", "the AWS region this server stands for, in ARNs and AWS_REGION", SERVER)
    account_id: str = setting("000000000000", "the AWS account id this server stands for, in ARNs", SERVER)
    s3_endpoint: str = setting(
        "",
        "the S3 endpoint (http:// or https:// URL) CreateFunction and UpdateFunctionCode fetch Code.S3Bucket/S3Key "
        "from, with the server's own AWS credentials as botocore finds them (AWS_ACCESS_KEY_ID..., AWS_PROFILE, a "
        "role); empty: code must come as ZipFile",
        SERVER,
    )
    sandbox: str = setting(
        "auto",
        "environment backend: auto (the jail, else gVisor when it can run; silo refuses to start when neither "
        "can isolate tenants), jail, gvisor (a gVisor sandbox per environment, needs runsc), or process "
        "(development only: tenants are not isolated)",
        SANDBOX,
    )
    stems_per_function: int = setting(
        8,
        "environments each tenant-isolated function version keeps initialised ahead for new tenants, at most "
        "(fewer when its new tenants come slowly, or when the stems' tenth of the memory budget is used); 0: none",
        SANDBOX,
    )
    # A template shares its hash seed and memory layout with every environment it forks.
    template_max_forks: int = setting(
        256,
        "environments one template forks before a fresh one replaces it; 0: no templates, every environment "
        "starts from nothing",
        SANDBOX,
    )
    cgroup_base: str = setting(
        "",
        "on a cgroup-v2 host, the cgroup (relative to /sys/fs/cgroup) to make the environments' cgroups under, "
        "with the memory, pids and cpu controllers available to it; empty: the daemon's own cgroup when systemd "
        "delegated it (Delegate=yes), else the root",
        SANDBOX,
    )
    cgroup_favordynmods: bool = setting(
        True,
        "on a cgroup-v2 host, remount the hierarchy with favordynmods (Linux 6.0+) when it lacks it, so that "
        "moving a process into a group costs a third (it makes every fork and exit on the host a little dearer); "
        "off: leave the host's mount as it is",
        SANDBOX,
    )
    keep_alive_s: int = setting(600, "seconds an idle environment lives", SANDBOX)
    init_timeout_s: int = setting(
        10,
        "seconds an environment's init phase (the runtime's start and the function's imports) may take before "
        "the call fails with Runtime.InitTimeout; Lambda's is 10",
        SANDBOX,
    )
    account_concurrency: int = setting(1000, "concurrent invocations of all functions together", LIMITS)
    memory_budget_mb: int = setting(
        0, "MiB all live environments may use together; 0: three quarters of the host's memory", LIMITS
    )
    queue_wait_ms: int = setting(
        2000, "how long a call waits its turn when all concurrency is in use, before it is throttled", LIMITS
    )
    # The HTTP front (docs/security.md, "The HTTP front").
    http_max_connections: int = setting(10000, "HTTP connections open at once, in all", HTTP)
    http_max_connections_per_address: int = setting(
        256,
        "HTTP connections open at once from one client address (an IPv6 /64), loopback included; 0: no cap, "
        "as behind a proxy",
        HTTP,
    )
    http_head_timeout_s: int = setting(20, "seconds a request's head may take to arrive", HTTP)
    http_body_timeout_s: int = setting(
        20, "the window, in seconds, over which a request's body must keep up 512 bytes a second", HTTP
    )
    http_idle_s: int = setting(30, "seconds an idle keep-alive connection stays open", HTTP)
    async_concurrency: int = setting(64, "asynchronous events running at once, at most", ASYNC)
    async_retry_base_ms: int = setting(
        60000, "wait before an asynchronous event's first retry, in ms; the second waits twice as long", ASYNC
    )
    log_level: str = setting("info", "the daemon's own log: the least severe level written", TELEMETRY, LOG_LEVELS)
    log_format: str = setting(
        "text",
        "the daemon's own log: text lines, or json (one object a line, for a log collector)",
        TELEMETRY,
        LOG_FORMATS,
    )
    log_retention_mb: int = setting(64, "MiB of log events stored per function; the oldest go first past it", TELEMETRY)
    metrics_tenant_labels: bool = setting(
        False, "a tenant label on per-call metrics in /metrics (one series per tenant: mind the cardinality)", TELEMETRY
    )

    sts_endpoint: str = setting(
        "",
        "the STS endpoint at which the Sts provider assumes each function's role per tenant, with silo's own AWS "
        "credentials (botocore's usual chain: AWS_* variables, the shared files, an instance role); empty: AWS "
        "STS of the region",
        CREDENTIALS,
    )
    token_issuer: str = setting(
        "",
        "the iss of tenant tokens: the URL your services know this server by (its keys are at "
        "<URL>/.well-known/jwks.json); empty: http://HOST:PORT",
        CREDENTIALS,
    )
    tenant_db_admin: str = setting(
        "",
        "the libpq connection string (DSN) at which the Postgres provider manages each tenant's login role: a role "
        "with CREATEROLE that is a member of each base role WITH ADMIN OPTION, in the database the settings name; "
        "keep a password in PGPASSFILE rather than here; empty: no Postgres provider",
        CREDENTIALS,
    )

    @property
    def db_path(self) -> Path:
        return self.data_dir / "silo.db"

    @property
    def code_dir(self) -> Path:
        return self.data_dir / "code"

    @property
    def env_dir(self) -> Path:
        return self.data_dir / "environments"

    @property
    def sdk_root(self) -> Path:
        """Where the boto3 and botocore the Python runtimes ship are built (silo.store.sdk)."""
        return self.data_dir / "runtime-sdk"


DEFAULTS = Settings()


class ConfigError(ValueError):
    """A setting is unknown or of the wrong kind; the message names it and where it came from."""


def environment_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def _kind(f: Field[Any]) -> str:
    """What a setting's values are, in words: how an error and --help describe them."""
    default = getattr(DEFAULTS, f.name)
    if isinstance(default, bool):
        return "true or false"
    if isinstance(default, int):
        return "a whole number"
    if isinstance(default, Path):
        return "a path"
    return "a string"


def _coerce(name: str, raw: str) -> Any:
    default = getattr(DEFAULTS, name)
    if isinstance(default, bool):
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off", ""):
            return False
        raise ConfigError(f"{environment_name(name)} must be true or false, got {raw!r}")
    if isinstance(default, int):
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"{environment_name(name)} must be a whole number, got {raw!r}") from None
    if isinstance(default, Path):
        return Path(raw)
    return raw


def _toml_type(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a float", str: "a string", list: "an array"}
    return "a table" if isinstance(value, dict) else names.get(type(value), type(value).__name__)


def _from_file(f: Field[Any], value: Any, source: str) -> Any:
    default = getattr(DEFAULTS, f.name)
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, str)
    if not ok:
        shown = f" ({value!r})" if isinstance(value, str | int | float) and not isinstance(value, bool) else ""
        raise ConfigError(f"{source}: {f.name} must be {_kind(f)}, not {_toml_type(value)}{shown}")
    return Path(value) if isinstance(default, Path) else value


def parse_config(table: Mapping[str, Any], source: str) -> dict[str, Any]:
    """The settings a config file's table gives, checked: an unknown key or a value of the wrong type is
    refused with a message naming the key and `source`."""
    known = {f.name: f for f in fields(Settings)}
    values: dict[str, Any] = {}
    for key, value in table.items():
        f = known.get(key)
        if f is None:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{source}: unknown key {key!r}{hint} (`silo serve --help` lists every setting)")
        values[key] = _from_file(f, value, source)
    return values


def read_config(path: Path) -> dict[str, Any]:
    """The settings of the TOML file at `path`, checked (see `parse_config`)."""
    try:
        text = path.read_bytes().decode()
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text; a config file is TOML") from None
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    return parse_config(table, str(path))


def load_settings(
    flags: Mapping[str, Any], environ: Mapping[str, str] | None = None, file: Mapping[str, Any] | None = None
) -> Settings:
    """Build the settings: a flag given on the command line, else `SILO_<NAME>`, else the config file's key
    (`file`, as `read_config` gives it), else the default."""
    environ = os.environ if environ is None else environ
    file = {} if file is None else file
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for f in fields(Settings):
        flag = flags.get(f.name)
        if flag is not None:
            values[f.name] = flag if not isinstance(flag, str) else _coerce(f.name, flag)
            origin[f.name] = flag_name(f.name)
        elif environment_name(f.name) in environ:
            values[f.name] = _coerce(f.name, environ[environment_name(f.name)])
            origin[f.name] = environment_name(f.name)
        elif f.name in file:
            values[f.name] = file[f.name]
            origin[f.name] = f"the config file's {f.name}"
        choices: tuple[str, ...] = f.metadata.get("choices", ())
        if choices and f.name in values:
            values[f.name] = str(values[f.name]).lower()
            if values[f.name] not in choices:
                raise ConfigError(f"{origin[f.name]} must be one of {', '.join(choices)}, got {values[f.name]!r}")
    settings = replace(DEFAULTS, **values)
    return replace(settings, data_dir=settings.data_dir.resolve())
