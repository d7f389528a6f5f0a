"""What the control plane reports: Lambda's FunctionConfiguration, and the FunctionSpec the invoke path runs.

Both are derived from a stored FunctionRecord and nothing else, so every operation that answers with
a configuration (Create, Get, GetConfiguration, List, both Updates) reports the same fields, and
TenancyConfig appears in all of them or in none.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from silo.control import credential_settings
from silo.control.names import LATEST, function_arn
from silo.runtimes import catalog
from silo.store.functions import FunctionRecord
from silo.types import FunctionSpec, SdkTrees


def lambda_timestamp(moment: datetime | None = None) -> str:
    """Lambda's LastModified form, e.g. `2023-06-12T10:45:00.000+0000` (a string, not a timestamp)."""
    moment = (moment or datetime.now(UTC)).astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}+0000"


def code_sha256_b64(sha256_hex: str) -> str:
    """Lambda's CodeSha256 is the base64 of the digest, where the store keys by hex."""
    return base64.b64encode(bytes.fromhex(sha256_hex)).decode()


def function_configuration(
    record: FunctionRecord, region: str, account: str, as_addressed: str | None = None
) -> dict[str, Any]:
    """The FunctionConfiguration of a stored version, in the model's member order. Its FunctionArn carries
    the qualifier the request gave (`as_addressed`: `$LATEST`, a version or an alias), else the version's
    number, and none for an unqualified $LATEST, as on Lambda."""
    c = record.config
    qualifier = as_addressed or (None if record.version == LATEST else record.version)
    out: dict[str, Any] = {
        "FunctionName": record.name,
        "FunctionArn": function_arn(region, account, record.name, qualifier),
        "Runtime": c["Runtime"],
        "Role": c["Role"],
        "Handler": c["Handler"],
        "CodeSize": record.code_size,
        "Description": c["Description"],
        "Timeout": c["Timeout"],
        "MemorySize": c["MemorySize"],
        "LastModified": record.last_modified,
        "CodeSha256": code_sha256_b64(record.code_sha256),
        "Version": record.version,
    }
    if "Environment" in c:
        out["Environment"] = {"Variables": dict(c["Environment"]["Variables"])}
    out["TracingConfig"] = dict(c["TracingConfig"])
    out["RevisionId"] = record.revision_id
    if c.get("Layers"):
        out["Layers"] = [{"Arn": layer["Arn"], "CodeSize": layer["CodeSize"]} for layer in c["Layers"]]
    # Code is unpacked before CreateFunction answers, so the function is usable at once: Active and
    # Successful are true, and boto3's waiters (function_active_v2, function_updated_v2) pass first time.
    out["State"] = "Active"
    out["LastUpdateStatus"] = "Successful"
    out["PackageType"] = c["PackageType"]
    out["Architectures"] = list(c["Architectures"])
    out["EphemeralStorage"] = dict(c["EphemeralStorage"])
    out["SnapStart"] = {"ApplyOn": c["SnapStart"]["ApplyOn"], "OptimizationStatus": "Off"}
    out["LoggingConfig"] = dict(c["LoggingConfig"])
    if "TenancyConfig" in c:
        out["TenancyConfig"] = dict(c["TenancyConfig"])
    return out


# Members of the function as a whole, kept in $LATEST's configuration: a published version takes them from
# there, not from its snapshot (its reserved concurrency, tags and silo's settings are the function's).
FUNCTION_MEMBERS = ("Tags", "ReservedConcurrentExecutions", "Silo", "CodeSigningConfigArn")
# Members that change nothing an environment runs: a change to them leaves the environments warm.
NOT_RUN = ("Tags", "ReservedConcurrentExecutions", "Policy", "Description", "CodeSigningConfigArn")


def run_digest(config: dict[str, Any], code_sha256: str) -> str:
    """What the environments of a version run, as one digest: the code and every member they read.

    It is the FunctionSpec's revision_id, so placement drops an idle environment whose version changed under
    it, but not one whose version only got a new policy, tag or description (each a new RevisionId)."""
    ran = {k: v for k, v in config.items() if k not in NOT_RUN}
    text = json.dumps([code_sha256, ran], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def snapshot(config: dict[str, Any]) -> dict[str, Any]:
    """A published version's configuration: $LATEST's, without the function's members and its policy."""
    return {k: v for k, v in config.items() if k not in (*FUNCTION_MEMBERS, "Policy")}


def function_spec(
    record: FunctionRecord,
    code_dir: Path,
    region: str,
    account: str,
    function: FunctionRecord | None = None,
    opt_dir: Path | None = None,
    sdk: SdkTrees | None = None,
) -> FunctionSpec:
    """What the invoke path needs to start and drive environments of this version. `function` is the
    function's $LATEST, whose function-wide members a published version follows (None: `record` is it);
    `opt_dir` the merged tree of its layers (None: it has none); `sdk` the SDK a Python runtime
    ships (None: none)."""
    whole = (function or record).config
    c = {**snapshot(record.config), **{k: whole[k] for k in FUNCTION_MEMBERS if k in whole}}
    logging = c["LoggingConfig"]
    return FunctionSpec(
        function_name=record.name,
        function_arn=function_arn(region, account, record.name),
        version=record.version,
        revision_id=run_digest(c, record.code_sha256),
        runtime=c["Runtime"],
        handler=c["Handler"],
        code_dir=code_dir,
        opt_dir=opt_dir,
        sdk=sdk if catalog.is_python(c["Runtime"]) else None,
        memory_mb=c["MemorySize"],
        timeout_s=c["Timeout"],
        ephemeral_mb=c["EphemeralStorage"]["Size"],
        environment=dict(c.get("Environment", {}).get("Variables", {})),
        per_tenant="TenancyConfig" in c,
        log_format=logging["LogFormat"],
        log_group=logging["LogGroup"],
        application_log_level=logging.get("ApplicationLogLevel"),
        system_log_level=logging.get("SystemLogLevel"),
        region=region,
        sandbox=c.get("Silo", {}).get("Sandbox", "default"),
        network=c.get("Silo", {}).get("Network", "none"),
        host_services=tuple(c.get("Silo", {}).get("HostServices") or ()),
        reserved_concurrency=c.get("ReservedConcurrentExecutions"),
        tenant_max_concurrency=c.get("Silo", {}).get("TenantMaxConcurrency"),
        tenant_max_environments=c.get("Silo", {}).get("TenantMaxEnvironments"),
        role=c["Role"],
        credentials=credential_settings.to_spec(c.get("Silo", {}).get("Credentials")),
    )
