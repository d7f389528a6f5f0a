"""The API's transport joins the writes of one turn of the event loop: an answer leaves in one piece."""

from __future__ import annotations

import asyncio
from typing import Any

from silo.api.protocol import JoinedWrites


class Recorder:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def get_extra_info(self, name: str) -> Any:
        return f"info:{name}"


def test_writes_of_one_turn_leave_together_and_close_sends_what_waits() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        joined = JoinedWrites(recorder, asyncio.get_running_loop())  # type: ignore[arg-type]
        joined.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        joined.write(b"{}")
        assert recorder.writes == []
        await asyncio.sleep(0)
        assert recorder.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
        joined.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await asyncio.sleep(0)
        assert recorder.writes[-1] == b"HTTP/1.1 100 Continue\r\n\r\n", "nothing waits past its turn"
        joined.writelines([b"last ", b"words"])
        joined.close()
        assert recorder.writes[-1] == b"last words" and recorder.closed
        assert joined.get_extra_info("peername") == "info:peername"

    asyncio.run(scenario())


def test_abort_drops_what_waits() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        joined = JoinedWrites(recorder, asyncio.get_running_loop())  # type: ignore[arg-type]
        joined.write(b"partial")
        joined.abort()
        await asyncio.sleep(0)
        assert recorder.writes == [] and recorder.aborted

    asyncio.run(scenario())
