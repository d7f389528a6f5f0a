"""silo's own per-function settings, beyond Lambda's configuration: which sandbox backend runs the
function's environments, whether they may open connections out of the host, and per-tenant caps on
concurrent invocations and on environments (null: no cap), the `Gateway` that lets end users call
the function with a verified token (silo.control.gateway_settings; null: no gateway), and the
`Credentials` each tenant's environments get of their own (silo.control.credential_settings; null: none).

They live in the function's stored configuration under `Silo` and never appear in Lambda's
FunctionConfiguration, so boto3 and the AWS CLI see exactly what Lambda would show.
"""

from __future__ import annotations

from typing import Any

from silo.control import credential_settings, gateway_settings
from silo.errors import InvalidParameterValueException

SANDBOXES = ("default", "jail", "gvisor")
NETWORKS = ("none", "outbound")
DEFAULTS: dict[str, Any] = {
    "Sandbox": "default",
    "Network": "none",
    "TenantMaxConcurrency": None,
    "TenantMaxEnvironments": None,
    "Gateway": None,
    "Credentials": None,
}
TENANT_CAPS = ("TenantMaxConcurrency", "TenantMaxEnvironments")


def current(config: dict[str, Any]) -> dict[str, Any]:
    return {**DEFAULTS, **config.get("Silo", {})}


def validate(body: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """The settings after applying `body`; members absent from it keep their value."""
    unknown = sorted(set(body) - set(DEFAULTS))
    if unknown:
        raise InvalidParameterValueException(
            f"Unknown silo setting(s): {', '.join(unknown)}. Known settings: {', '.join(DEFAULTS)}."
        )
    settings = current(config)
    for key, allowed in (("Sandbox", SANDBOXES), ("Network", NETWORKS)):
        if key in body:
            value = body[key]
            if value not in allowed:
                raise InvalidParameterValueException(f"{key} must be one of {', '.join(allowed)}; got {value!r}.")
            settings[key] = value
    for key in TENANT_CAPS:
        if key in body:
            value = body[key]
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise InvalidParameterValueException(
                    f"{key} must be a whole number of at least 1, or null for no cap; got {value!r}."
                )
            settings[key] = value
    if "Gateway" in body:
        settings["Gateway"] = gateway_settings.validate(body["Gateway"], per_tenant="TenancyConfig" in config)
    if "Credentials" in body:
        settings["Credentials"] = credential_settings.validate(
            body["Credentials"], per_tenant="TenancyConfig" in config
        )
    return settings
