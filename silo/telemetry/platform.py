"""The platform's own records around each invocation, as Lambda writes them.

Text format: `START`, `END` and `REPORT` lines. JSON format (`LoggingConfig.LogFormat = JSON`):
`platform.start` and `platform.report` at INFO, `platform.runtimeDone` at DEBUG, each carrying
`tenantId` when the function is tenant-isolated; `SystemLogLevel` drops the records below it.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Any

from silo.types import FunctionError

SYSTEM_LEVELS = {"DEBUG": 10, "INFO": 20, "WARN": 30}
_DEBUG = SYSTEM_LEVELS["DEBUG"]
_INFO = SYSTEM_LEVELS["INFO"]

_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


@dataclass(frozen=True, slots=True)
class Report:
    """How an invocation went, for its REPORT line or its platform.report record."""

    request_id: str
    duration_ms: float
    memory_mb: int
    max_memory_mb: int | None
    init_ms: float | None
    status: str  # success | error | timeout | failure, as in Lambda's platform.report
    # How the environment came to be when it was not a plain start: "stem" (initialised ahead, bound to
    # its tenant on this call) or "fork" (forked from a template). Shown after Init Duration.
    init_kind: str | None = None
    # False when the backend isolates nothing (the process one): every report says so, for whoever reads it.
    isolated: bool = True


def status_of(error: FunctionError | None, environment_dead: bool, payload: bytes) -> str:
    """Lambda's status: a handler error leaves the environment alive; a timeout or a crash does not."""
    if error is None:
        return "success"
    if not environment_dead:
        return "error"
    # Only silo's own short payloads reach here (the environment died), so the search is cheap.
    return "timeout" if b"Sandbox.Timedout" in payload[:256] else "failure"


def billed_ms(duration_ms: float) -> int:
    return max(1, math.ceil(duration_ms))


def report_line(
    request_id: str,
    duration_ms: float,
    memory_mb: int,
    max_memory_mb: int | None,
    init_ms: float | None,
    init_kind: str | None = None,
    isolated: bool = True,
) -> str:
    parts = [
        f"REPORT RequestId: {request_id}",
        f"Duration: {duration_ms:.2f} ms",
        f"Billed Duration: {billed_ms(duration_ms)} ms",
        f"Memory Size: {memory_mb} MB",
    ]
    if max_memory_mb is not None:
        parts.append(f"Max Memory Used: {max_memory_mb} MB")
    if init_ms is not None:
        # A parser of Lambda's line reads "Init Duration: <n> ms" and stops there; the kind follows it.
        parts.append(f"Init Duration: {init_ms:.2f} ms" + (f" ({init_kind})" if init_kind else ""))
    if not isolated:
        # Last, after Lambda's own fields, as Lambda appends its XRAY ones: parsers of its line still work.
        parts.append(UNISOLATED_FIELD)
    return "\t".join(parts) + "\t\n"


UNISOLATED_FIELD = "Isolation: none (development backend: tenants are not isolated)"


def iso_time(now: float) -> str:
    """`2025-10-13T19:48:06.990Z`, the time format of Lambda's JSON records."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"


class PlatformRecords:
    """Formats the platform's records of one environment: text lines, or JSON records filtered by level."""

    def __init__(
        self,
        log_format: str,
        system_level: str | None,
        function_arn: str,
        version: str,
        tenant_id: str | None,
    ) -> None:
        self.json = log_format.upper() == "JSON"
        self._level = SYSTEM_LEVELS.get((system_level or "INFO").upper(), _INFO)
        self._function_arn = function_arn
        self._version = version
        self._tenant_id = tenant_id

    def bind_tenant(self, tenant_id: str | None) -> None:
        self._tenant_id = tenant_id

    def _json(self, kind: str, record: dict[str, Any]) -> str:
        if self._tenant_id is not None:
            record["tenantId"] = self._tenant_id
        return _encode({"time": iso_time(time.time()), "type": kind, "record": record}) + "\n"

    def start(self, request_id: str) -> list[str]:
        if not self.json:
            return [f"START RequestId: {request_id} Version: {self._version}\n"]
        if self._level > _INFO:
            return []
        record = {"requestId": request_id, "functionArn": self._function_arn, "version": self._version}
        return [self._json("platform.start", record)]

    def finish(self, report: Report) -> list[str]:
        if not self.json:
            return [
                f"END RequestId: {report.request_id}\n",
                report_line(
                    report.request_id,
                    report.duration_ms,
                    report.memory_mb,
                    report.max_memory_mb,
                    report.init_ms,
                    report.init_kind,
                    report.isolated,
                ),
            ]
        out = []
        if self._level <= _DEBUG:
            out.append(
                self._json(
                    "platform.runtimeDone",
                    {
                        "requestId": report.request_id,
                        "status": report.status,
                        "metrics": {"durationMs": round(report.duration_ms, 3)},
                    },
                )
            )
        if self._level <= _INFO:
            metrics: dict[str, Any] = {
                "durationMs": round(report.duration_ms, 3),
                "billedDurationMs": billed_ms(report.duration_ms),
                "memorySizeMB": report.memory_mb,
            }
            if report.max_memory_mb is not None:
                metrics["maxMemoryUsedMB"] = report.max_memory_mb
            if report.init_ms is not None:
                metrics["initDurationMs"] = round(report.init_ms, 3)
                if report.init_kind:
                    metrics["initType"] = report.init_kind
            record: dict[str, Any] = {"requestId": report.request_id, "metrics": metrics, "status": report.status}
            if not report.isolated:
                record["isolation"] = "none"  # silo's own member: the development backend isolates nothing
            out.append(self._json("platform.report", record))
        return out
