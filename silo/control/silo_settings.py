"""silo's own per-function settings, beyond Lambda's configuration: which sandbox backend runs the
function's environments, whether they may open connections out of the host, and per-tenant caps on
concurrent invocations and on environments (null: no cap), the `Gateway` that lets end users call
the function with a verified token (silo.control.gateway_settings; null: no gateway), the
`HostServices` of the host's loopback an outbound environment may reach (silo.jail.network), and the
`Credentials` each tenant's environments get of their own (silo.control.credential_settings; null: none).

They live in the function's stored configuration under `Silo` and never appear in Lambda's
FunctionConfiguration, so boto3 and the AWS CLI see exactly what Lambda would show.
"""

from __future__ import annotations

import ipaddress
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
    "HostServices": [],
    "Credentials": None,
}
# Ports of the host's loopback one function's environments may reach: a handful, not a range.
HOST_SERVICES_MAX = 16
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
    if "HostServices" in body:
        settings["HostServices"] = host_services(body["HostServices"])
    if settings["HostServices"] and settings["Network"] != "outbound":
        raise InvalidParameterValueException(
            "HostServices are reached through an outbound environment's network: set Network to outbound too "
            "(it still reaches nothing else of the host)."
        )
    if "Gateway" in body:
        settings["Gateway"] = gateway_settings.validate(body["Gateway"], per_tenant="TenancyConfig" in config)
    if "Credentials" in body:
        settings["Credentials"] = credential_settings.validate(
            body["Credentials"], per_tenant="TenancyConfig" in config
        )
    return settings


def host_services(value: Any) -> list[str]:
    """`["127.0.0.1:5432", ...]`: TCP ports on the host's loopback, each as address:port, without repeats."""
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > HOST_SERVICES_MAX:
        raise InvalidParameterValueException(
            f'HostServices must be a list of at most {HOST_SERVICES_MAX} host services as "address:port", '
            f'for example ["127.0.0.1:5432"]; got {value!r}.'
        )
    found: list[str] = []
    for item in value:
        address, _, port = item.rpartition(":") if isinstance(item, str) else ("", "", "")
        try:
            ip = ipaddress.IPv4Address(address)
            number = int(port) if port.isdigit() else 0
        except ValueError:
            ip, number = None, 0
        if ip is None or not ip.is_loopback or not 1 <= number <= 65535:
            raise InvalidParameterValueException(
                f'HostServices entry {item!r} is not a TCP port of the host\'s loopback as "address:port" '
                '(an IPv4 address of 127.0.0.0/8, a port 1-65535), for example "127.0.0.1:5432". A service '
                "listening on all addresses listens on 127.0.0.1 too."
            )
        canonical = f"{ip}:{number}"
        if any(f.split(":")[1] == str(number) for f in found):
            raise InvalidParameterValueException(
                f"HostServices names port {number} twice; an environment reaches each port at one address."
            )
        found.append(canonical)
    return found
