"""The daemon's own log in JSON (`--log-format json`): one whole object a line, exceptions included."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import datetime

import pytest

from silo.cli import log_format


@pytest.fixture()
def stream() -> Iterator[io.StringIO]:
    out = io.StringIO()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield out
    # configure() replaces the root logger's handlers (pytest's among them): put them back.
    root.handlers[:] = handlers
    root.setLevel(level)


def records(stream: io.StringIO) -> list[dict[str, str]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_each_record_is_one_json_object_a_line(stream: io.StringIO) -> None:
    log_format.configure("info", "json", stream)
    logging.getLogger("silo.test").info("environment %s: %d lines\nof output", "e1", 3)
    logging.getLogger("uvicorn.error").warning('a "quoted" word, ünïcode')
    logging.getLogger("silo.test").debug("below the level: not written")
    lines = records(stream)
    assert [(r["level"], r["logger"], r["message"]) for r in lines] == [
        ("INFO", "silo.test", "environment e1: 3 lines\nof output"),
        ("WARNING", "uvicorn.error", 'a "quoted" word, ünïcode'),
    ]
    assert len(stream.getvalue().splitlines()) == 2, "a newline in a message stays inside its line"
    when = datetime.fromisoformat(lines[0]["time"])
    assert lines[0]["time"].endswith("Z") and when.utcoffset() is not None and when.utcoffset().total_seconds() == 0
    assert set(lines[0]) == {"time", "level", "logger", "message"}


def test_an_exception_comes_with_its_traceback(stream: io.StringIO) -> None:
    log_format.configure("info", "json", stream)
    try:
        raise ValueError("the cgroup is gone")
    except ValueError:
        logging.getLogger("silo").exception("internal error while serving %s", "GET /x")
    (line,) = records(stream)
    assert line["message"] == "internal error while serving GET /x"
    assert line["exception"].startswith("Traceback (most recent call last):")
    assert line["exception"].endswith("ValueError: the cgroup is gone")


def test_text_stays_the_default_format(stream: io.StringIO) -> None:
    log_format.configure("info", "text", stream)
    logging.getLogger("silo").info("hello")
    assert stream.getvalue().rstrip().endswith(" INFO silo: hello")
