"""Logging inside the environment: the root handler, its text and JSON formats, error reports.

Formats are awslambdaric's, so log processing written for Lambda works on silo's log streams.
Everything goes to stdout; the platform reads the environment's stdout as its log stream.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback
from typing import Any

TEXT_FORMAT = "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s\n"
DATE_FORMAT = "%Y-%m-%dT%H:%M:%S"
# U+00A0 indentation and \r line ends keep a multi-line error one record in a line-based log.
_ERROR_INDENT = "\u00a0"
_ERROR_LINE_END = "\r"

# LogRecord attributes that are not user extras (awslambdaric's list, plus 3.12's taskName).
_RESERVED = frozenset(
    (
        "name msg args levelname levelno pathname filename module exc_info exc_text stack_info lineno "
        "funcName created msecs relativeCreated thread threadName processName process taskName "
        "aws_request_id tenant_id _frame_type"
    ).split()
)

_encode_json = json.JSONEncoder(ensure_ascii=False).encode


class Invoke:
    """The invocation in progress, as log records are stamped with it."""

    request_id = ""
    tenant_id: str | None = None


class _InvokeFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.aws_request_id = Invoke.request_id
        record.tenant_id = Invoke.tenant_id
        return True


class _StdoutHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stdout.write(self.format(record))
        except Exception:
            self.handleError(record)


def _level(record: logging.LogRecord) -> int:
    return min(50, max(0, record.levelno)) // 10 * 10


class JsonFormatter(logging.Formatter):
    """One JSON object a line: timestamp, level, message, logger, requestId, tenantId, extras."""

    def __init__(self) -> None:
        super().__init__(datefmt=DATE_FORMAT)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return time.strftime(DATE_FORMAT, time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        record.levelno = _level(record)
        record.levelname = logging.getLevelName(record.levelno)
        exc_info = record.exc_info
        result: dict[str, Any] = {
            "timestamp": self.formatTime(record),
            "level": record.levelname,
            "message": record.getMessage(),
            "logger": record.name,
            "stackTrace": traceback.format_tb(exc_info[2]) if exc_info else None,
            "errorType": exc_info[0].__name__ if exc_info and exc_info[0] else None,
            "errorMessage": str(exc_info[1]) if exc_info else None,
            "requestId": getattr(record, "aws_request_id", None),
            "location": f"{record.pathname}:{record.funcName}:{record.lineno}" if exc_info else None,
        }
        tenant_id = getattr(record, "tenant_id", None)
        if tenant_id is not None:
            result["tenantId"] = tenant_id
        for key, value in record.__dict__.items():
            if key not in _RESERVED and key not in result:
                result[key] = value
        return _encode_json({k: v for k, v in result.items() if v is not None}) + "\n"


def level_from_env(value: str | None) -> str:
    """AWS_LAMBDA_LOG_LEVEL as awslambdaric reads it: TRACE means DEBUG, unset means no change."""
    if value is None:
        return ""
    return {"TRACE": "DEBUG"}.get(value.upper(), value.upper())


def setup(json_format: bool, level: str) -> None:
    """Install the root handler. Must run before the function's module is imported."""
    logging.Formatter.converter = time.gmtime
    handler = _StdoutHandler()
    if json_format:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT, DATE_FORMAT))
    handler.addFilter(_InvokeFilter())
    root = logging.getLogger()
    if isinstance(logging.getLevelName(level), int):
        root.setLevel(level)
    root.addHandler(handler)


def _indent(line: str) -> str:
    stripped = line.lstrip(" ")
    return _ERROR_INDENT * (len(line) - len(stripped)) + stripped


def log_error(error: dict[str, Any], json_format: bool) -> None:
    """Print an error document the way awslambdaric prints an unhandled error."""
    if json_format:
        record = {"timestamp": time.strftime(DATE_FORMAT + "Z", time.gmtime()), "level": "ERROR"}
        record.update(error)
        if Invoke.tenant_id is not None:
            record["tenantId"] = Invoke.tenant_id
        sys.stdout.write(_encode_json(record) + "\n")
        return
    description = "[ERROR]"
    if error.get("errorType"):
        description += " " + error["errorType"]
    if error.get("errorMessage"):
        if error.get("errorType"):
            description += ":"
        description += " " + error["errorMessage"]
    lines = [description]
    trace = error.get("stackTrace")
    if trace is not None:
        lines.append("Traceback (most recent call last):")
        for element in trace:
            if element == "":
                lines.append("")
            else:
                lines.extend(_indent(line) for line in element.splitlines())
    sys.stdout.write(_ERROR_LINE_END.join(lines) + "\n")
