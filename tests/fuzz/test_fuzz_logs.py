"""Fuzz the log spool: a LogStream reading an environment's output from a real pipe, fed arbitrary output
interleaved with invocations beginning and ending, drains and platform records.

With allowances no output reaches, every line comes out as the events the module promises: one event
per line, a line longer than MAX_EVENT_BYTES cut into several that join back into the line, output
without its newline an event of its own before the next platform record; each event stamped with the
request id running when it was written, none longer than MAX_EVENT_BYTES of UTF-8; the invocation's
slice returned by `end` is the tail of what it wrote, within INVOCATION_BUFFER_BYTES. With tight
allowances and arbitrary bytes, nothing raises, what is held stays bounded, and every drop is marked.

Only the public API is used: the constructor, begin, answered, end, platform, drain, close.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from silo.telemetry import logs
from silo.telemetry.events import LogEvent
from silo.telemetry.logs import LogStream, Report, report_line
from silo.telemetry.platform import PlatformRecords
from silo.telemetry.throttle import LogRates
from tests.fuzz.bounded import fuzz_settings, retained_bytes

pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")

ARN = "arn:aws:lambda:us-east-1:000000000000:function:f"
NAME = "2026/01/01/[$LATEST]0123456789abcdef0123456789abcdef"
MAX_EVENT = logs.MAX_EVENT_BYTES
BOUNDLESS = LogRates(bytes_per_s=1e15, burst_bytes=1e15, lines_per_s=1e15, burst_lines=1e15)
PLATFORM_PREFIXES = ("START RequestId:", "END RequestId:", "REPORT RequestId:", "[silo]", "[platform]")


class Sink:
    def __init__(self) -> None:
        self.events: list[LogEvent] = []

    def add(self, event: LogEvent) -> None:
        self.events.append(event)


def report(request_id: str) -> Report:
    return Report(request_id, 1.5, 128, 40, None, "success")


# Output a runtime writes: no line of it starts like a platform record. Characters of one to four bytes,
# and lines placed so that the cut at MAX_EVENT_BYTES falls anywhere near them, and inside one of them.
TEXT = st.text(alphabet="ab \t\né€😀", max_size=60).map(str.encode)
AT_THE_CUT = st.builds(
    lambda before, char, after, newline: ("a" * (MAX_EVENT - before) + char * 3 + "b" * after + newline).encode(),
    st.integers(-8, 8),
    st.sampled_from(["c", "é", "€", "😀"]),
    st.integers(0, 70_000),
    st.sampled_from(["", "\n"]),
)
HUGE_LINE = st.integers(MAX_EVENT + 1, 3 * MAX_EVENT).map(lambda n: b"x" * n + b"\n")
VALID_OUTPUT = st.one_of(TEXT, TEXT, TEXT, AT_THE_CUT, HUGE_LINE)
ACTIONS = st.lists(
    st.one_of(VALID_OUTPUT, st.sampled_from(["begin", "end", "answered", "platform", "turn", "drain"])),
    max_size=14,
)


@dataclass
class Model:
    """What the stream should have made of the output, as the module documents it."""

    items: list[tuple[str, str | None, str]] = field(default_factory=list)  # (kind, request id, text)
    partial: bytes = b""
    request: str | None = None

    def output(self, data: bytes) -> None:
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        for line in lines:
            if line:
                self.items.append(("out", self.request, line.decode()))

    def platform(self, text: str) -> None:
        if self.partial:
            self.items.append(("out", self.request, self.partial.decode()))
        self.partial = b""
        self.items.append(("platform", self.request, text.rstrip("\n")))


def compare(observed: list[LogEvent], expected: list[tuple[str, str | None, str]]) -> None:
    at = 0
    for kind, request, text in expected:
        if kind == "platform":
            event = observed[at]
            assert event.message == text, (event.message[:200], text[:200])
            at += 1
            continue
        joined = ""
        while joined != text:
            assert at < len(observed), f"missing output: {text[len(joined) : len(joined) + 80]!r}"
            event = observed[at]
            assert not event.message.startswith(PLATFORM_PREFIXES), f"a record where output was due: {event}"
            piece = event.message
            assert text.startswith(joined + piece), (
                f"line split wrong at {len(joined)}: got {piece[:20]!r}...{piece[-20:]!r}, "
                f"want {text[len(joined) : len(joined) + 20]!r}"
            )
            assert event.request_id == request, (event.request_id, request)
            joined += piece
            at += 1
    assert at == len(observed), f"unexpected events: {[e.message[:80] for e in observed[at:]]}"


class Pipe:
    """The environment's side: what it writes waits in `pending` while the pipe is full."""

    def __init__(self) -> None:
        self.r, self.w = os.pipe()
        os.set_blocking(self.r, False)
        os.set_blocking(self.w, False)
        self.pending = bytearray()

    def push(self) -> None:
        while self.pending:
            try:
                n = os.write(self.w, self.pending[: 1 << 16])
            except BlockingIOError:
                return
            del self.pending[:n]

    def close(self) -> None:
        for fd in (self.r, self.w):
            try:
                os.close(fd)
            except OSError:
                pass


async def run_stream(actions: list[Any], rates: LogRates, model: Model | None) -> tuple[Sink, list[str]]:
    loop = asyncio.get_running_loop()
    problems: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: problems.append(context))
    pipe = Pipe()
    sink = Sink()
    dropped: list[str] = []
    records = PlatformRecords("Text", None, ARN, "$LATEST", "t1")
    stream = LogStream(
        NAME, pipe.r, records, sink, "f", "t1", rates=rates, on_dropped=lambda fn, n: dropped.append(f"{fn}:{n}")
    )
    skip = {id(sink), id(loop), id(records)}
    running: str | None = None
    slice_expected = bytearray()
    count = 0

    def settle() -> None:
        """Everything written so far reaches the stream (the pipe holds 64 KiB; the rest waits)."""
        while True:
            pipe.push()
            stream.drain()
            if not pipe.pending:
                stream.drain()
                return

    def check_held() -> None:
        bound = logs.INVOCATION_BUFFER_BYTES + 2 * MAX_EVENT + 2 * getattr(logs, "READ_BYTES", 65536) + 65536
        held = retained_bytes(stream, skip)
        assert held <= bound, f"the stream holds {held} bytes, past {bound}"

    try:
        for action in actions:
            if isinstance(action, bytes):
                pipe.pending += action
                pipe.push()
                if running is not None:
                    slice_expected.extend(action)
                if model is not None:
                    model.output(action)
            elif action == "turn":
                pipe.push()
                await asyncio.sleep(0)
            elif action == "drain":
                pipe.push()
                stream.drain()
            elif action == "begin" and running is None:
                settle()
                count += 1
                running = f"req-{count}"
                stream.begin(running)
                start = f"START RequestId: {running} Version: $LATEST\n"
                slice_expected[:] = start.encode()
                if model is not None:
                    model.platform(start)
                    model.request = running
            elif action == "answered" and running is not None:
                settle()
                stream.answered()
            elif action == "platform":
                settle()
                line = f"[platform] a record of the platform's own, during {running}\n"
                stream.platform(line)
                if running is not None:
                    slice_expected.extend(line.encode())
                if model is not None:
                    model.platform(line)
            elif action == "end" and running is not None:
                settle()
                out = stream.end(report(running))
                finish = [f"END RequestId: {running}\n", report_line(running, 1.5, 128, 40, None)]
                slice_expected.extend("".join(finish).encode())
                assert len(out) <= logs.INVOCATION_BUFFER_BYTES
                if model is not None:
                    assert out == bytes(slice_expected[-logs.INVOCATION_BUFFER_BYTES :])
                    for line in finish:
                        model.platform(line)
                    model.request = None
                running = None
            check_held()
        settle()
        os.close(pipe.w)
        stream.close()
        if model is not None and model.partial:
            model.items.append(("out", model.request, model.partial.decode()))
        await asyncio.sleep(0)
        assert not problems, problems
    finally:
        pipe.close()
    return sink, dropped


@fuzz_settings(120, slow=True)
@given(actions=ACTIONS)
def test_output_becomes_the_events_the_module_promises(actions: list[Any]) -> None:
    model = Model()
    sink, dropped = asyncio.run(run_stream(actions, BOUNDLESS, model))
    assert not dropped
    for event in sink.events:
        assert len(event.message.encode()) <= MAX_EVENT, f"an event of {len(event.message.encode())} bytes"
        assert (event.function, event.stream, event.tenant_id) == ("f", NAME, "t1")
    compare(sink.events, model.items)


ANY_OUTPUT = st.one_of(
    st.binary(max_size=300),
    st.binary(min_size=1, max_size=4).map(lambda b: b * 20_000),
    st.just(b"\xff" * (MAX_EVENT + 10) + b"\n"),
    VALID_OUTPUT,
)
TIGHT = LogRates(bytes_per_s=2000, burst_bytes=5000, lines_per_s=50, burst_lines=100)


@fuzz_settings(120, slow=True)
@given(
    actions=st.lists(
        st.one_of(ANY_OUTPUT, st.sampled_from(["begin", "end", "answered", "platform", "turn", "drain"])),
        max_size=14,
    ),
    tight=st.booleans(),
)
def test_any_output_is_read_within_bounds_and_drops_are_marked(actions: list[Any], tight: bool) -> None:
    started = time.monotonic()
    sink, dropped = asyncio.run(run_stream(actions, TIGHT if tight else BOUNDLESS, None))
    elapsed = time.monotonic() - started
    markers = [e for e in sink.events if e.message.startswith("[silo]") and "of output dropped" in e.message]
    assert len(markers) == len(dropped), (len(markers), dropped)
    for event in sink.events:
        # Cut by output bytes: a message cannot have more characters than the bytes it came from.
        assert len(event.message) <= MAX_EVENT
    if tight:
        written = sum(len(a) for a in actions if isinstance(a, bytes))
        kept = sum(len(e.message) + 1 for e in sink.events if not e.message.startswith(PLATFORM_PREFIXES))
        # The burst, what the rate refilled meanwhile, and a read or two taken whole past the allowance.
        allowed = TIGHT.burst_bytes + TIGHT.bytes_per_s * elapsed + 2 * getattr(logs, "READ_BYTES", 65536) + 4096
        assert kept <= allowed, f"kept {kept} bytes of output, the allowance is {allowed:.0f}"
        if written > allowed:
            assert markers, f"{written} bytes written, {kept} kept, and no marker says so"


@pytest.mark.parametrize("char", ["é", "€", "😀"])
def test_a_character_at_the_cut_survives_and_no_event_passes_the_limit(char: str) -> None:
    line = "a" * (MAX_EVENT - 1) + char * 3 + "b" * 10
    sink, _ = asyncio.run(run_stream([(line + "\n").encode()], BOUNDLESS, None))
    assert all(len(e.message.encode()) <= MAX_EVENT for e in sink.events)
    assert "".join(e.message for e in sink.events) == line


def test_output_that_is_not_utf8_makes_no_event_past_the_limit() -> None:
    sink, _ = asyncio.run(run_stream([b"\xff" * MAX_EVENT + b"\n"], BOUNDLESS, None))
    assert all(len(e.message.encode()) <= MAX_EVENT for e in sink.events)
