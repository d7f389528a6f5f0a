"""Validation of CreateFunction / UpdateFunctionConfiguration / UpdateFunctionCode bodies.

Pure functions over the decoded JSON body: they return the configuration to store or raise the
error Lambda would. Lambda's order is kept: first every member against the service model (all
failures in one ValidationException), then the service's own rules (InvalidParameterValueException).

The stored configuration is a plain dict holding only what silo honours:
Runtime, Role, Handler, Description, Timeout, MemorySize, PackageType, Architectures,
EphemeralStorage, TracingConfig, SnapStart, LoggingConfig, and when given Environment,
TenancyConfig, Tags, Layers (here the layer version ARNs as given; silo.control.functions resolves them).

Members silo does not act on and that change nothing a caller can observe about running code
(VpcConfig, KMSKeyArn, DeadLetterConfig, ImageConfig, ...) are ignored like any
unknown member. Members whose silent loss would make a function behave differently from what was
asked (FileSystemConfigs, PublishTo, S3 or image code) are refused with a clear message.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any

from silo.control import env_vars, tags
from silo.control.fields import (
    bool_member,
    dict_member,
    int_member,
    list_member,
    str_member,
)
from silo.control.names import FunctionRef, function_ref, match_function_name
from silo.control.violations import Violations, enum_constraint
from silo.errors import InvalidParameterValueException, InvalidRequestContentException, ValidationException
from silo.runtimes import catalog

ROLE_PATTERN = r"arn:(aws[a-zA-Z-]*)?:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+"
HANDLER_PATTERN = r"[^\s]+"
LOG_GROUP_PATTERN = r"[\.\-_/#A-Za-z0-9]+"

ARCHITECTURES = ("x86_64", "arm64")
LOG_FORMATS = ("JSON", "Text")
APPLICATION_LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL")
SYSTEM_LOG_LEVELS = ("DEBUG", "INFO", "WARN")
TRACING_MODES = ("Active", "PassThrough")
PACKAGE_TYPES = ("Zip", "Image")
# Lambda's refusal of a package type a runtime does not take ("... is not supported for package type
# Image"), in the form of a platform that runs .zip archives only.
IMAGE_UNSUPPORTED = (
    "PackageType Image is not supported: silo runs functions from .zip file archives only. Deploy with "
    "PackageType Zip and the code as ZipFile, or as S3Bucket and S3Key."
)
# AWS-recorded for UpdateFunctionCode of a Zip function; CreateFunction's default PackageType is Zip.
IMAGE_URI_WITH_ZIP = "Please don't provide ImageUri when updating a function with packageType Zip."
SNAPSTART_APPLY_ON = ("PublishedVersions", "None")
TENANT_ISOLATION_MODES = ("PER_TENANT",)
MAX_LAYERS = 5
# The validator's pattern for a function's Layers (each at most 140 long), as Lambda quotes it.
LAYER_ARN_PATTERN = (
    r"(arn:[a-zA-Z0-9-]+:lambda:[a-zA-Z0-9-]+:\d{12}:layer:[a-zA-Z0-9-_]+:[0-9]+)"
    r"|(arn:[a-zA-Z0-9-]+:lambda:::awslayer:[a-zA-Z0-9-_]+)"
)
LAYER_ARN = re.compile(LAYER_ARN_PATTERN, re.ASCII)

# Runtimes Lambda has retired: they get Lambda's "no longer supported" message rather than the enum one.
DEPRECATED_RUNTIMES = (
    "python2.7", "python3.6", "python3.7", "nodejs", "nodejs4.3", "nodejs4.3-edge", "nodejs6.10",
    "nodejs8.10", "nodejs10.x", "nodejs12.x", "nodejs14.x", "nodejs16.x", "java8", "dotnetcore1.0",
    "dotnetcore2.0", "dotnetcore2.1", "dotnetcore3.1", "dotnet6", "go1.x", "ruby2.5", "ruby2.7",
)  # fmt: skip

MANDATORY_MESSAGE = "Runtime and Handler are mandatory parameters for functions created with deployment packages."
TENANCY_IMMUTABLE_MESSAGE = (
    "TenancyConfig cannot be changed after a function is created. "
    "To change the tenant isolation mode, create a new function."
)


@dataclass(frozen=True, slots=True)
class Rules:
    """What this host offers, against which requests are judged."""

    available_runtimes: tuple[str, ...]
    architecture: str


@dataclass(frozen=True, slots=True)
class S3Location:
    """Where a package is to be fetched from: Code.S3Bucket, S3Key and S3ObjectVersion."""

    bucket: str
    key: str
    version: str | None = None


# A package as a request gives it: the zip's bytes, or the S3 object that holds them.
Package = bytes | S3Location


@dataclass(frozen=True, slots=True)
class CreateRequest:
    ref: FunctionRef
    config: dict[str, Any]
    package: Package
    publish: bool = False


@dataclass(frozen=True, slots=True)
class CodeRequest:
    package: Package
    architectures: list[str] | None
    revision_id: str | None
    dry_run: bool
    publish: bool = False


def missing(member: str) -> ValidationException:
    """A required member left out, in the validator's words."""
    return ValidationException(
        f"1 validation error detected: Value null at '{member}' failed to satisfy constraint: Member must not be null"
    )


def _check_shapes(body: dict[str, Any], v: Violations) -> None:
    """Model constraints of the members create and update-configuration share."""
    role = str_member(body, "Role")
    if role is not None and not re.fullmatch(ROLE_PATTERN, role):
        v.add(role, "role", f"Member must satisfy regular expression pattern: {ROLE_PATTERN}")
    handler = str_member(body, "Handler")
    if handler is not None:
        if len(handler) > 128:
            v.add(handler, "handler", "Member must have length less than or equal to 128")
        if handler and not re.fullmatch(HANDLER_PATTERN, handler):
            v.add(handler, "handler", f"Member must satisfy regular expression pattern: {HANDLER_PATTERN}")
    description = str_member(body, "Description")
    if description is not None and len(description) > 256:
        v.add(description, "description", "Member must have length less than or equal to 256")
    _check_range(body, "Timeout", "timeout", 1, 900, v)
    _check_range(body, "MemorySize", "memorySize", 128, 10240, v)
    storage = dict_member(body, "EphemeralStorage")
    if storage is not None:
        size = int_member(storage, "Size", "EphemeralStorage.Size")
        if size is None:
            v.add("null", "ephemeralStorage.size", "Member must not be null")
        else:
            _check_range(storage, "Size", "ephemeralStorage.size", 512, 10240, v)
    env_vars.check_shapes(body, v)
    tracing = dict_member(body, "TracingConfig")
    if tracing is not None:
        _check_enum(tracing, "Mode", "tracingConfig.mode", TRACING_MODES, v)
    snap = dict_member(body, "SnapStart")
    if snap is not None:
        _check_enum(snap, "ApplyOn", "snapStart.applyOn", SNAPSTART_APPLY_ON, v)
    logging = dict_member(body, "LoggingConfig")
    if logging is not None:
        _check_enum(logging, "LogFormat", "loggingConfig.logFormat", LOG_FORMATS, v)
        _check_enum(logging, "ApplicationLogLevel", "loggingConfig.applicationLogLevel", APPLICATION_LOG_LEVELS, v)
        _check_enum(logging, "SystemLogLevel", "loggingConfig.systemLogLevel", SYSTEM_LOG_LEVELS, v)
        group = str_member(logging, "LogGroup", "LoggingConfig.LogGroup")
        if group is not None:
            if not 1 <= len(group) <= 512:
                v.add(group, "loggingConfig.logGroup", "Member must have length less than or equal to 512")
            if not re.fullmatch(LOG_GROUP_PATTERN, group):
                v.add(
                    group,
                    "loggingConfig.logGroup",
                    f"Member must satisfy regular expression pattern: {LOG_GROUP_PATTERN}",
                )


def _check_range(body: dict[str, Any], key: str, member: str, low: int, high: int, v: Violations) -> None:
    value = int_member(body, key)
    if value is None:
        return
    if value < low:
        v.add(value, member, f"Member must have value greater than or equal to {low}")
    if value > high:
        v.add(value, member, f"Member must have value less than or equal to {high}")


def _check_enum(body: dict[str, Any], key: str, member: str, allowed: tuple[str, ...], v: Violations) -> None:
    value = str_member(body, key)
    if value is not None and value not in allowed:
        v.add(value, member, enum_constraint(allowed))


def _check_architectures(body: dict[str, Any], v: Violations) -> list[str] | None:
    archs = list_member(body, "Architectures")
    if archs is None:
        return None
    if len(archs) != 1:
        bound = "less than or equal to 1" if archs else "greater than or equal to 1"
        v.add(archs, "architectures", f"Member must have length {bound}")
    if any(a not in ARCHITECTURES for a in archs):
        v.add(archs, "architectures", f"Member must satisfy constraint: [{enum_constraint(ARCHITECTURES)}]")
    return [str(a) for a in archs]


def _check_host_architecture(archs: list[str] | None, rules: Rules) -> None:
    if archs is not None and archs != [rules.architecture]:
        raise InvalidParameterValueException(
            f"silo runs functions on this host's architecture only ({rules.architecture}); "
            f"{', '.join(archs)} is not available here."
        )


def _check_runtime(runtime: str, rules: Rules) -> None:
    if runtime in rules.available_runtimes:
        return
    if catalog.is_node(runtime):
        served = [r for r in rules.available_runtimes if catalog.is_node(r)]
        # One node serves one major version: say which this host has, so the caller knows what to ask for.
        has = (
            f"this host's node serves {served[0]} only"
            if served
            else f"this host has no node of a version silo serves ({', '.join(catalog.NODE_RUNTIMES)}) on PATH"
        )
        raise InvalidParameterValueException(
            f"The runtime {runtime} is not available on this silo host: {has}. "
            f"Available runtimes: {', '.join(rules.available_runtimes)}."
        )
    if runtime in catalog.LAMBDA_RUNTIMES:
        raise InvalidParameterValueException(
            f"The runtime {runtime} is not available on this silo host. "
            f"Available runtimes: {', '.join(rules.available_runtimes)}."
        )
    if runtime in DEPRECATED_RUNTIMES:
        raise InvalidParameterValueException(
            f"The runtime parameter of {runtime} is no longer supported for creating or updating AWS "
            "Lambda functions. We recommend you use a supported runtime while creating or updating functions."
        )
    raise InvalidParameterValueException(
        f"Value {runtime} at 'runtime' failed to satisfy constraint: " + enum_constraint(list(catalog.LAMBDA_RUNTIMES))
    )


def _logging(body: dict[str, Any], current: dict[str, Any] | None, name: str) -> dict[str, Any]:
    """The effective LoggingConfig: the request's members over the current ones.

    Levels exist only with JSON logs, as on Lambda: asking for one with Text is refused; levels
    inherited from an earlier JSON configuration are dropped when the format goes back to Text.
    """
    given = dict_member(body, "LoggingConfig") or {}
    merged = {**(current or {}), **{k: v for k, v in given.items() if v is not None}}
    merged.setdefault("LogFormat", "Text")
    merged.setdefault("LogGroup", f"/aws/lambda/{name}")
    levels = ("ApplicationLogLevel", "SystemLogLevel")
    if merged["LogFormat"] == "Text":
        asked = [k for k in levels if k in given]
        if asked:
            raise InvalidParameterValueException(
                f"{' and '.join(asked)} can be set only when LoggingConfig.LogFormat is JSON."
            )
        for k in levels:
            merged.pop(k, None)
    else:
        for k in levels:
            merged.setdefault(k, "INFO")
    return {k: merged[k] for k in ("LogFormat", "ApplicationLogLevel", "SystemLogLevel", "LogGroup") if k in merged}


def _layers(body: dict[str, Any]) -> list[str] | None:
    """The layer version ARNs a request names, in order (None: the member is absent; [] removes them)."""
    given = list_member(body, "Layers")
    if given is None:
        return None
    v = Violations()
    bad = [a for a in given if not isinstance(a, str) or not 1 <= len(a) <= 140 or not LAYER_ARN.fullmatch(a)]
    if bad:
        v.add(
            given,
            "layers",
            "Member must satisfy constraint: [Member must have length less than or equal to 140, Member must have "
            "length greater than or equal to 1, Member must satisfy regular expression pattern: "
            f"{LAYER_ARN_PATTERN}, Member must not be null]",
        )
        raise v.error()
    if len(given) > MAX_LAYERS:
        raise InvalidParameterValueException(f"Cannot reference more than {MAX_LAYERS} layers.")
    seen: dict[str, str] = {}
    for arn in given:
        layer = arn.rsplit(":", 1)[0]
        if layer in seen:
            raise InvalidParameterValueException(
                "Two different versions of the same layer are not allowed to be referenced in the same function. "
                f"{seen[layer]} and {arn} are versions of the same layer."
            )
        seen[layer] = arn
    return list(given)


def _refuse_unsupported(body: dict[str, Any]) -> None:
    if list_member(body, "FileSystemConfigs"):
        raise InvalidParameterValueException("silo does not support FileSystemConfigs.")
    if str_member(body, "PublishTo") is not None:
        raise InvalidParameterValueException(
            "silo does not support PublishTo (LATEST_PUBLISHED, for capacity providers); publish a version "
            "with Publish or PublishVersion."
        )


def _tenancy(body: dict[str, Any], v: Violations) -> dict[str, str] | None:
    tenancy = dict_member(body, "TenancyConfig")
    if tenancy is None:
        return None
    mode = str_member(tenancy, "TenantIsolationMode", "TenancyConfig.TenantIsolationMode")
    if mode is None:
        v.add("null", "tenancyConfig.tenantIsolationMode", "Member must not be null")
        return None
    if mode not in TENANT_ISOLATION_MODES:
        v.add(mode, "tenancyConfig.tenantIsolationMode", enum_constraint(TENANT_ISOLATION_MODES))
        return None
    return {"TenantIsolationMode": mode}


def code_package(code: dict[str, Any], member: str) -> Package:
    """The package of a `Code` (create) or request body (update): ZipFile, or S3Bucket and S3Key (and
    S3ObjectVersion) of an object silo fetches; an ImageUri belongs to PackageType Image, which silo refuses."""
    prefix = member.rsplit(".", 1)[0] + "." if "." in member else ""
    if code.get("ImageUri") is not None:
        raise InvalidParameterValueException(IMAGE_URI_WITH_ZIP)
    bucket = str_member(code, "S3Bucket", f"{prefix}S3Bucket")
    key = str_member(code, "S3Key", f"{prefix}S3Key")
    version = str_member(code, "S3ObjectVersion", f"{prefix}S3ObjectVersion")
    raw = str_member(code, "ZipFile", member)
    if bucket is not None or key is not None or version is not None:
        if raw is not None:
            raise InvalidParameterValueException(
                "Please provide the function code either as ZipFile or as S3Bucket and S3Key, not both."
            )
        if not bucket or not key:
            raise InvalidParameterValueException(
                "Please provide both S3Bucket and S3Key (and S3ObjectVersion for a version of the object)."
            )
        return S3Location(bucket, key, version or None)
    if raw is None:
        raise InvalidParameterValueException("Please provide a source for function code.")
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequestContentException(
            f"Could not parse request body into json: {member} is not valid base64"
        ) from None


def create_request(body: dict[str, Any], rules: Rules) -> CreateRequest:
    """Validate a CreateFunction body; returns the name, the configuration to store and the zip."""
    v = Violations()
    raw_name = str_member(body, "FunctionName")
    role = str_member(body, "Role")
    code = dict_member(body, "Code")
    if raw_name is None:
        v.add("null", "functionName", "Member must not be null")
    if role is None:
        v.add("null", "role", "Member must not be null")
    if code is None:
        v.add("null", "code", "Member must not be null")
    _check_shapes(body, v)
    archs = _check_architectures(body, v)
    _check_enum(body, "PackageType", "packageType", PACKAGE_TYPES, v)
    tenancy = _tenancy(body, v)
    match = None if raw_name is None else match_function_name(raw_name, namespaced=False, v=v)
    if v or raw_name is None or match is None or role is None or code is None:
        raise v.error()
    ref = function_ref(raw_name, match)
    if ref.qualifier is not None:
        raise InvalidParameterValueException(
            "A function name given to CreateFunction cannot carry a version or alias qualifier."
        )
    if str_member(body, "PackageType") == "Image":
        raise InvalidParameterValueException(IMAGE_UNSUPPORTED)
    runtime = str_member(body, "Runtime")
    handler = str_member(body, "Handler")
    if not runtime or not handler:
        raise InvalidParameterValueException(MANDATORY_MESSAGE)
    _check_runtime(runtime, rules)
    _check_host_architecture(archs, rules)
    _refuse_unsupported(body)
    layers = _layers(body)
    package = code_package(code, "Code.ZipFile")
    snap = dict_member(body, "SnapStart") or {}
    apply_on = str_member(snap, "ApplyOn") or "None"
    if tenancy is not None and apply_on != "None":
        raise InvalidParameterValueException("SnapStart is not supported for functions with tenant isolation mode.")
    config: dict[str, Any] = {
        "Runtime": runtime,
        "Role": role,
        "Handler": handler,
        "Description": str_member(body, "Description") or "",
        "Timeout": int_member(body, "Timeout") or 3,
        "MemorySize": int_member(body, "MemorySize") or 128,
        "PackageType": "Zip",
        "Architectures": archs or [rules.architecture],
        "EphemeralStorage": {"Size": int_member(dict_member(body, "EphemeralStorage") or {}, "Size") or 512},
        "TracingConfig": {"Mode": str_member(dict_member(body, "TracingConfig") or {}, "Mode") or "PassThrough"},
        "SnapStart": {"ApplyOn": apply_on},
        "LoggingConfig": _logging(body, None, ref.name),
    }
    variables = env_vars.variables(body)
    if variables is not None:
        config["Environment"] = {"Variables": variables}
    if tenancy is not None:
        config["TenancyConfig"] = tenancy
    given_tags = dict_member(body, "Tags")
    if given_tags:
        config["Tags"] = tags.for_create(given_tags)
    if layers:
        config["Layers"] = layers
    return CreateRequest(ref, config, package, publish=bool(bool_member(body, "Publish")))


def update_configuration(body: dict[str, Any], current: dict[str, Any], name: str, rules: Rules) -> dict[str, Any]:
    """Validate an UpdateFunctionConfiguration body; returns the new configuration to store."""
    if "TenancyConfig" in body:
        # The model has no TenancyConfig member here, so boto3 and the CLI refuse it before sending
        # (ParamValidationError). A raw request that carries one is refused rather than ignored, so
        # nobody believes they changed the isolation mode of a live function.
        raise InvalidParameterValueException(TENANCY_IMMUTABLE_MESSAGE)
    v = Violations()
    _check_shapes(body, v)
    v.raise_if_any()
    config = dict(current)
    runtime = str_member(body, "Runtime")
    if runtime is not None:
        _check_runtime(runtime, rules)
        config["Runtime"] = runtime
    handler = str_member(body, "Handler")
    if handler is not None:
        if not handler:
            raise InvalidParameterValueException(MANDATORY_MESSAGE)
        config["Handler"] = handler
    _refuse_unsupported(body)
    layers = _layers(body)
    if layers is not None:
        # ARNs here; the service resolves them. An empty list takes every layer away.
        config["Layers"] = layers
    for key in ("Role", "Description"):
        value = str_member(body, key)
        if value is not None:
            config[key] = value
    for key in ("Timeout", "MemorySize"):
        number = int_member(body, key)
        if number is not None:
            config[key] = number
    storage = dict_member(body, "EphemeralStorage")
    if storage is not None:
        config["EphemeralStorage"] = {"Size": int_member(storage, "Size")}
    tracing = dict_member(body, "TracingConfig")
    if tracing is not None and str_member(tracing, "Mode") is not None:
        config["TracingConfig"] = {"Mode": str_member(tracing, "Mode")}
    snap = dict_member(body, "SnapStart")
    if snap is not None:
        apply_on = str_member(snap, "ApplyOn") or "None"
        if "TenancyConfig" in current and apply_on != "None":
            raise InvalidParameterValueException("SnapStart is not supported for functions with tenant isolation mode.")
        config["SnapStart"] = {"ApplyOn": apply_on}
    variables = env_vars.variables(body)
    if variables is not None:
        config["Environment"] = {"Variables": variables}
    config["LoggingConfig"] = _logging(body, current.get("LoggingConfig"), name)
    return config


def update_code(body: dict[str, Any], rules: Rules) -> CodeRequest:
    """Validate an UpdateFunctionCode body."""
    v = Violations()
    archs = _check_architectures(body, v)
    v.raise_if_any()
    _check_host_architecture(archs, rules)
    if str_member(body, "PublishTo") is not None:
        raise InvalidParameterValueException(
            "silo does not support PublishTo (LATEST_PUBLISHED, for capacity providers); publish a version "
            "with Publish or PublishVersion."
        )
    return CodeRequest(
        package=code_package(body, "ZipFile"),
        architectures=archs,
        revision_id=str_member(body, "RevisionId"),
        dry_run=bool(bool_member(body, "DryRun")),
        publish=bool(bool_member(body, "Publish")),
    )
