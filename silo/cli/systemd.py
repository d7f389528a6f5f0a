"""Readiness for systemd (`Type=notify`): the sd_notify protocol, written out rather than a dependency.

The protocol is one datagram of `KEY=value` lines sent to the unix socket named by `$NOTIFY_SOCKET`
(systemd's sd_notify(3)); a name starting with `@` is in the abstract namespace. libsystemd's own
function does more (vsock addresses, passing descriptors) that silo does not use.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Mapping

from silo.api.health import Readiness

log = logging.getLogger(__name__)

# How often the announcer looks: uvicorn itself checks whether it was told to stop every 0.1 s.
POLL_S = 0.1


def notify(state: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send `state` (e.g. "READY=1") to the service manager; False when none asked for it or it is unreachable."""
    address = (os.environ if environ is None else environ).get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    elif not address.startswith("/"):
        log.warning("NOTIFY_SOCKET=%s is not a unix socket path; systemd is not told that silo is %s", address, state)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(state.encode(), address)
    except OSError as exc:
        log.warning("could not tell the service manager %s at %s: %s", state, address.lstrip("\0"), exc)
        return False
    return True


async def announce(readiness: Readiness, listening: Callable[[], bool], stopping: Callable[[], bool]) -> None:
    """Say READY=1 once the server listens and `/readyz` would answer 200 (STATUS= tells what it waits for
    meanwhile, as `systemctl status` shows it), then STOPPING=1 as soon as it is told to stop, from when
    `/readyz` answers 503."""
    said = ""
    while not stopping():
        reasons = readiness.reasons() if listening() else {"server": "not listening yet"}
        if not reasons:
            notify("READY=1\nSTATUS=serving")
            break
        status = "STATUS=starting: " + "; ".join(f"{part}: {why}" for part, why in reasons.items())
        if status != said:
            notify(status)
            said = status
        await asyncio.sleep(POLL_S)
    while not stopping():
        await asyncio.sleep(POLL_S)
    readiness.stopping()
    notify("STOPPING=1\nSTATUS=stopping: cleaning up environments")
