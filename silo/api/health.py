"""The probes: `/healthz` (the process answers) and `/readyz` (it can take traffic), for a service manager,
a load balancer or an orchestrator. Both are unauthenticated and cheap: no database access, and every
readiness question is answered from what the daemon already knows, in constant time.

    GET /healthz    200 {"status": "up"}
    GET /readyz     200 {"status": "ready"}, or 503 ServiceUnavailableException with a `Reasons` object
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from silo.api.front import ServiceUnavailable
from silo.api.render import json_response

# A readiness question: None when that part is ready, else why not, in words for an operator.
Check = Callable[[], "str | None"]
# The parts the server waits for, and what each says until the wiring has it.
PARTS = {
    "store": "the database is not open yet",
    "sandbox": "the environment backend has not started yet",
}


class Readiness:
    """What must hold before the server takes traffic: each part is pending until the wiring says how to
    ask it (`watch`), and the whole server is not ready once it is stopping."""

    def __init__(self, parts: Mapping[str, str] = PARTS) -> None:
        """`parts`: each part, with why it is not ready before `watch` or `up` is called for it."""
        self._checks: dict[str, Check] = {part: _constant(why) for part, why in parts.items()}
        self._stopping = False

    def watch(self, part: str, check: Check) -> None:
        """From now on, `check` says whether `part` is ready."""
        self._checks[part] = check

    def up(self, part: str) -> None:
        """`part` is ready, and stays so."""
        self.watch(part, _constant(None))

    def stopping(self) -> None:
        self._stopping = True

    def reasons(self) -> dict[str, str]:
        """Why the server is not ready, by part; empty when it is."""
        if self._stopping:
            return {"server": "silo is stopping"}
        found = {part: check() for part, check in self._checks.items()}
        return {part: reason for part, reason in found.items() if reason is not None}


def _constant(reason: str | None) -> Check:
    return lambda: reason


def routes(readiness: Readiness) -> list[BaseRoute]:
    async def healthz(request: Request) -> Response:
        return json_response({"status": "up"})

    async def readyz(request: Request) -> Response:
        reasons = readiness.reasons()
        if not reasons:
            return json_response({"status": "ready"})
        error = ServiceUnavailable(
            "silo is not ready to take calls yet: " + "; ".join(f"{part}: {why}" for part, why in reasons.items())
        )
        headers = {"x-amzn-ErrorType": error.code, **error.headers()}
        return json_response({**error.body(), "Reasons": reasons}, error.status, headers)

    return [Route("/healthz", healthz, methods=["GET"]), Route("/readyz", readyz, methods=["GET"])]
