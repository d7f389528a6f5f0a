"""The invocation record a destination function receives, in Lambda's shape.

`requestContext.tenantId` is silo's addition: present when the event had a tenant, so a destination
function that is not tenant-isolated still knows whose event failed.
"""

from __future__ import annotations

import json
import time
from typing import Any

from silo.store.events import QueuedEvent


def _json_or_text(data: bytes) -> Any:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return data.decode("utf-8", errors="replace")


def timestamp(now: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"


def destination_record(
    ev: QueuedEvent,
    function_arn: str,
    condition: str,
    runs: int,
    response: bytes | None,
    function_error: str | None,
    executed_version: str | None,
    now: float,
) -> bytes:
    """The record of an event's last outcome. `function_arn` is qualified, as Lambda reports it."""
    context: dict[str, Any] = {
        "requestId": ev.request_id,
        "functionArn": function_arn,
        "condition": condition,
        "approximateInvokeCount": runs,
    }
    if ev.tenant_id is not None:
        context["tenantId"] = ev.tenant_id
    record: dict[str, Any] = {
        "version": "1.0",
        "timestamp": timestamp(now),
        "requestContext": context,
        "requestPayload": _json_or_text(ev.payload),
    }
    # An event that never ran (too old, or throttled until it was) has no response to report.
    if runs > 0 and response is not None:
        response_context: dict[str, Any] = {"statusCode": 200, "executedVersion": executed_version or "$LATEST"}
        if function_error is not None:
            response_context["functionError"] = function_error
        record["responseContext"] = response_context
        record["responsePayload"] = _json_or_text(response)
    return json.dumps(record, separators=(",", ":")).encode()
