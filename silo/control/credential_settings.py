"""The `Credentials` silo setting: which providers give each tenant's environments credentials of their own,
once they are bound to that tenant (silo.credentials serves them).

    {"Sts": {"SessionPolicy": "{...${TenantId}...}", "DurationSeconds": 3600},
     "Token": {"DurationSeconds": 900, "Audience": "my-services"},
     "Postgres": {"Database": "app", "BaseRole": "app_tenant", "ConnectionLimit": 5, "DurationSeconds": 3600}}

`Sts`: silo assumes the function's execution role for each tenant, with the session tag TenantId and the
optional session policy (`${TenantId}` replaced), and the AWS SDKs in the environment find the credentials
at the container-credentials endpoint. `Token`: a JWT signed by silo that names the tenant, for the user's
own services, with the `aud` they expect (default "silo"). `Postgres`: a login role per tenant in the
user's database (silo.credentials.postgres), inheriting the base role. Any may be left out; null removes the
setting. Checked here, when the setting is given, so that no tenant's call later meets a policy STS
refuses for its length or a duration out of bounds.
"""

from __future__ import annotations

import json
from typing import Any

from silo.control.fields import tenant_setting
from silo.credentials import identifiers, policy
from silo.errors import InvalidParameterValueException
from silo.types import CredentialsSetting, PostgresSetting

MEMBERS = ("Sts", "Token", "Postgres")
# AssumeRole's own bounds; a role's MaxSessionDuration (1 to 12 hours) may lower the upper one, which STS
# then says at the call.
STS_MIN_S = 900
STS_MAX_S = 43200
STS_DEFAULT_S = 3600
# A tenant token is a bearer credential: short lives bound what a leaked one is worth, and silo renews it
# for free before it ends, so a longer life buys nothing. At least a minute, so a call has time to use it.
TOKEN_MIN_S = 60
TOKEN_MAX_S = 3600
TOKEN_DEFAULT_S = 900
TOKEN_DEFAULT_AUDIENCE = "silo"
MAX_AUDIENCE = 256
# A tenant's PostgreSQL password lasts this long (VALID UNTIL), renewed at half life: at least 5 minutes, so
# a call has time to connect with it; at most a day, so a leaked one is worth little.
POSTGRES_MIN_S = 300
POSTGRES_MAX_S = 86400
POSTGRES_DEFAULT_S = 3600
# Connections each tenant's role may hold at once (CONNECTION LIMIT); a tenant can never take more of the
# server's max_connections than this.
POSTGRES_MIN_CONNECTIONS = 1
POSTGRES_MAX_CONNECTIONS = 1000
POSTGRES_DEFAULT_CONNECTIONS = 5


def _refuse(message: str) -> InvalidParameterValueException:
    return InvalidParameterValueException(f"Credentials: {message}")


def validate(value: Any, *, per_tenant: bool) -> dict[str, Any] | None:
    """The normalised Credentials setting for `value` (None removes it), or InvalidParameterValueException."""
    value = tenant_setting(
        "Credentials",
        value,
        MEMBERS,
        per_tenant=per_tenant,
        why_per_tenant="credentials are given to each tenant's environments, so they serve",
    )
    if value is None:
        return None
    if not value:
        raise _refuse('name at least one provider, e.g. {"Token": {}}, or give null for none.')
    out: dict[str, Any] = {}
    if "Sts" in value:
        out["Sts"] = _sts(value["Sts"])
    if "Token" in value:
        out["Token"] = _token(value["Token"])
    if "Postgres" in value:
        out["Postgres"] = _postgres(value["Postgres"])
    return out


def _members(value: Any, where: str, known: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _refuse(f"{where} must be an object; got {type(value).__name__}.")
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise _refuse(f"unknown member(s) {', '.join(unknown)} in {where}; known: {', '.join(known)}.")
    return value


def _duration(value: Any, where: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _refuse(f"{where}.DurationSeconds must be a whole number from {low} to {high}; got {value!r}.")
    return value


def _sts(value: Any) -> dict[str, Any]:
    given = _members(value, "Sts", ("SessionPolicy", "DurationSeconds"))
    duration = _duration(given.get("DurationSeconds", STS_DEFAULT_S), "Sts", STS_MIN_S, STS_MAX_S)
    return {"SessionPolicy": _session_policy(given.get("SessionPolicy")), "DurationSeconds": duration}


def _session_policy(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, dict):
        value = json.dumps(value, separators=(",", ":"))
    if not isinstance(value, str) or not value:
        raise _refuse("Sts.SessionPolicy must be an IAM policy document, as JSON text or an object.")
    if not policy.CHARACTERS.fullmatch(value):
        raise _refuse(
            "Sts.SessionPolicy may hold only tab, line feed, carriage return and the characters U+0020 to U+00FF, "
            "as STS accepts."
        )
    try:
        document = json.loads(policy.render(value, "tenant"))
    except ValueError as exc:
        raise _refuse(f"Sts.SessionPolicy is not JSON once {policy.PLACEHOLDER} is replaced: {exc}.") from None
    if not isinstance(document, dict) or "Statement" not in document:
        raise _refuse('Sts.SessionPolicy must be a policy document: {"Version": "2012-10-17", "Statement": [...]}.')
    longest = policy.longest(value)
    if longest > policy.MAX_CHARS:
        raise _refuse(
            f"Sts.SessionPolicy would be {longest} characters for a tenant id of the longest length "
            f"({len(policy.LONGEST_TENANT)}) in each {policy.PLACEHOLDER}; STS takes at most {policy.MAX_CHARS}. "
            "Shorten it, or name the tenant in the role's own policies with ${aws:PrincipalTag/TenantId} (silo "
            "tags every session with TenantId)."
        )
    return value


def _token(value: Any) -> dict[str, Any]:
    given = _members(value, "Token", ("DurationSeconds", "Audience"))
    duration = _duration(given.get("DurationSeconds", TOKEN_DEFAULT_S), "Token", TOKEN_MIN_S, TOKEN_MAX_S)
    audience = given.get("Audience", TOKEN_DEFAULT_AUDIENCE)
    if not isinstance(audience, str) or not 1 <= len(audience) <= MAX_AUDIENCE or not audience.isprintable():
        raise _refuse(
            f"Token.Audience must be 1 to {MAX_AUDIENCE} printable characters, the `aud` the tokens carry for "
            f"your services to check; got {audience!r}."
        )
    return {"DurationSeconds": duration, "Audience": audience}


def _postgres(value: Any) -> dict[str, Any]:
    given = _members(value, "Postgres", ("Database", "BaseRole", "ConnectionLimit", "DurationSeconds"))
    for member in ("Database", "BaseRole"):
        if member not in given:
            raise _refuse(f'Postgres.{member} is required, e.g. {{"Database": "app", "BaseRole": "app_tenant"}}.')
    database = _identifier(given["Database"], "Postgres.Database")
    base_role = _identifier(given["BaseRole"], "Postgres.BaseRole")
    if base_role.lower() in RESERVED_ROLES or base_role.startswith("pg_"):
        raise _refuse(
            f"Postgres.BaseRole {base_role!r} is a role of PostgreSQL's own; name the role you made for your "
            "tenants (`silo tenant-db init` makes one)."
        )
    limit = given.get("ConnectionLimit", POSTGRES_DEFAULT_CONNECTIONS)
    if isinstance(limit, bool) or not isinstance(limit, int):
        limit = None
    if limit is None or not POSTGRES_MIN_CONNECTIONS <= limit <= POSTGRES_MAX_CONNECTIONS:
        raise _refuse(
            f"Postgres.ConnectionLimit must be a whole number from {POSTGRES_MIN_CONNECTIONS} to "
            f"{POSTGRES_MAX_CONNECTIONS}; got {given.get('ConnectionLimit')!r}."
        )
    duration = _duration(given.get("DurationSeconds", POSTGRES_DEFAULT_S), "Postgres", POSTGRES_MIN_S, POSTGRES_MAX_S)
    return {"Database": database, "BaseRole": base_role, "ConnectionLimit": limit, "DurationSeconds": duration}


# Roles the base role may never be: what PostgreSQL makes itself, and what would hand tenants everything.
RESERVED_ROLES = frozenset({"postgres", "public", "current_role", "current_user", "session_user", "none"})


def _identifier(value: Any, where: str) -> str:
    """A name as PostgreSQL takes it: 1 to 63 bytes of UTF-8 without NUL (longer ones it would cut silently,
    naming another object). silo always quotes it (sql.Identifier), so case and other characters stand."""
    if not isinstance(value, str) or not value or "\x00" in value or len(value.encode()) > identifiers.MAX_BYTES:
        raise _refuse(
            f"{where} must be a PostgreSQL name of 1 to {identifiers.MAX_BYTES} bytes (it is used as written, "
            f"case and all); got {value!r}."
        )
    if not value.isprintable():
        raise _refuse(f"{where} must be printable; got {value!r}.")
    return value


def to_spec(stored: dict[str, Any] | None) -> CredentialsSetting | None:
    """What the environments of a function need of its stored setting."""
    if not stored:
        return None
    sts = stored.get("Sts")
    token = stored.get("Token")
    return CredentialsSetting(
        sts_duration_s=sts["DurationSeconds"] if sts else None,
        sts_session_policy=sts["SessionPolicy"] if sts else None,
        token_duration_s=token["DurationSeconds"] if token else None,
        token_audience=token["Audience"] if token else None,
        postgres=_postgres_spec(stored.get("Postgres")),
    )


def _postgres_spec(stored: dict[str, Any] | None) -> PostgresSetting | None:
    if not stored:
        return None
    return PostgresSetting(stored["Database"], stored["BaseRole"], stored["ConnectionLimit"], stored["DurationSeconds"])
