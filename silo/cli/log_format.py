"""The daemon's own log, as text lines for a terminal or JSON lines for a log collector (`--log-format`).

Function output has its own path (silo.telemetry); this is what `silo serve` itself says. The JSON
formatter is a few lines of the standard library's `logging`, so the daemon needs no package for it.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import TextIO

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonLines(logging.Formatter):
    """One JSON object a line: `time` (UTC, ISO 8601, milliseconds), `level`, `logger`, `message`, and
    `exception` (the traceback's text) when the record has one. A newline inside a message is escaped, so a
    line is always a whole record."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        entry = {
            "time": when.replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False)


def configure(level: str, fmt: str, stream: TextIO | None = None) -> None:
    """Send every logger's records (uvicorn's too, given `log_config=None`) to stderr, or `stream`, in `fmt`."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLines() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
