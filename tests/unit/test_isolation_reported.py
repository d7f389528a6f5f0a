"""The development backend isolates nothing, and everything a person reads says so: every REPORT line (text and
JSON), silo's /silo/v1/server and /metrics. With an isolating backend none of them changes."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

from starlette.requests import Request

from silo.api.telemetry import TelemetryRoutes
from silo.router.pool import Router
from silo.router.stems import StemPolicy
from silo.sandbox.process import ProcessSandbox
from silo.telemetry.platform import UNISOLATED_FIELD, PlatformRecords, Report, report_line
from silo.telemetry.recorder import Telemetry
from silo.types import EnvKey, FunctionSpec, Invocation
from tests.support import function_spec


def report_of(tail: bytes) -> str:
    return next(line for line in tail.decode().splitlines(True) if line.startswith("REPORT"))


def run_once(tmp_path: Path, spec: FunctionSpec, telemetry: Telemetry) -> bytes:
    code = tmp_path / "code"
    code.mkdir()
    (code / "app.py").write_text("def handler(event, context):\n    return 1\n")
    spec = replace(spec, code_dir=code)

    async def main() -> bytes:
        router = Router(ProcessSandbox(tmp_path / "envs"), stems=StemPolicy(per_function=0), telemetry=telemetry)
        try:
            inv = Invocation("r1", b"{}", "a", spec.function_arn, want_log_tail=True)
            result = await router.invoke(EnvKey(spec.function_arn, spec.version, "a"), spec, inv)
        finally:
            await router.close()
        return result.log_tail

    return asyncio.run(main())


def test_every_report_line_of_the_development_backend_says_tenants_are_not_isolated(tmp_path: Path) -> None:
    line = report_of(run_once(tmp_path, function_spec("f"), Telemetry()))
    assert UNISOLATED_FIELD in line and "tenants are not isolated" in line, line
    fields = line.rstrip("\t\n").split("\t")
    assert fields[-1] == UNISOLATED_FIELD, "after Lambda's own fields"
    assert [f.split(":")[0] for f in fields[:-1]][:4] == [
        "REPORT RequestId",
        "Duration",
        "Billed Duration",
        "Memory Size",
    ]
    # An isolated environment's line is Lambda's, unchanged.
    assert report_line("r", 1.0, 128, 40, 5.0, "fork") == (
        "REPORT RequestId: r\tDuration: 1.00 ms\tBilled Duration: 1 ms\tMemory Size: 128 MB\t"
        "Max Memory Used: 40 MB\tInit Duration: 5.00 ms (fork)\t\n"
    )


def test_json_reports_say_it_too(tmp_path: Path) -> None:
    tail = run_once(tmp_path, replace(function_spec("f"), log_format="JSON"), Telemetry())
    records = [json.loads(line) for line in tail.decode().splitlines() if line.startswith("{")]
    [report] = [r["record"] for r in records if r.get("type") == "platform.report"]
    assert report["isolation"] == "none" and report["tenantId"] == "a"
    [isolated] = PlatformRecords("JSON", None, "arn", "$LATEST", "a").finish(Report("r", 1.0, 128, 40, None, "success"))
    assert "isolation" not in json.loads(isolated)["record"]


def server_document(telemetry: Telemetry) -> dict[str, Any]:
    routes = TelemetryRoutes(cast(Any, None), telemetry)
    response = asyncio.run(routes.server(Request({"type": "http", "method": "GET", "path": "/silo/v1/server"})))
    assert response.status_code == 200
    return cast(dict[str, Any], json.loads(response.body))


def test_the_api_and_the_metrics_say_whether_tenants_are_isolated(tmp_path: Path) -> None:
    unisolated = Telemetry()
    Router(ProcessSandbox(tmp_path / "envs"), telemetry=unisolated)
    document = server_document(unisolated)
    assert document["Sandbox"] == "process" and document["TenantIsolation"] is False
    assert document["Backends"] == [{"Name": "process", "IsolatesTenants": False}]
    assert "NOT isolated" in document["Warning"]
    assert b'silo_tenant_isolation{backend="process"} 0.0' in unisolated.metrics.exposition()

    isolated = Telemetry()
    isolated.backends("jail", {"jail": True, "gvisor": True})
    document = server_document(isolated)
    assert document["TenantIsolation"] is True and "Warning" not in document
    exposition = isolated.metrics.exposition()
    assert b'silo_tenant_isolation{backend="jail"} 1.0' in exposition
    assert b'silo_tenant_isolation{backend="gvisor"} 1.0' in exposition
