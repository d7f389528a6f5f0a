"""The probes: `/healthz` answers while the process is up; `/readyz` turns 200 only once the store is open,
the environment backend is up and the templates it was asked to warm have started, and 503 once stopping."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from starlette.applications import Starlette

from silo.api.health import Readiness, routes
from silo.sandbox.jail import TEMPLATE_ENTRY
from silo.sandbox.template import TemplateCommand, Templates


async def get(app: Starlette, path: str) -> tuple[int, dict[str, str], Any]:
    """One GET through the ASGI app, as the server would make it."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": path, "raw_path": path.encode(), "query_string": b"",
             "headers": [], "http_version": "1.1", "scheme": "http", "server": ("127.0.0.1", 9700)}  # fmt: skip
    await app(scope, receive, send)
    start = sent[0]
    headers = {k.decode().lower(): v.decode() for k, v in start["headers"]}
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], headers, json.loads(body)


def test_healthz_answers_whatever_the_readiness() -> None:
    app = Starlette(routes=routes(Readiness()))
    assert asyncio.run(get(app, "/healthz"))[::2] == (200, {"status": "up"})


def test_readyz_names_each_part_until_it_is_up_then_answers_200() -> None:
    async def scenario() -> None:
        readiness = Readiness()
        app = Starlette(routes=routes(readiness))
        status, headers, body = await get(app, "/readyz")
        assert status == 503 and headers["x-amzn-errortype"] == "ServiceUnavailableException"
        assert headers["retry-after"] == "1" and headers["x-amzn-requestid"]
        assert set(body["Reasons"]) == {"store", "sandbox"}, body
        assert body["Message"].startswith("silo is not ready to take calls yet: store: the database is not open")

        readiness.up("store")
        status, _, body = await get(app, "/readyz")
        assert (status, set(body["Reasons"])) == (503, {"sandbox"})

        # The sandbox is up, but the templates it was asked to warm are still starting.
        templates = Templates(lambda key: TemplateCommand([sys.executable, "-S", "-B", "-c", TEMPLATE_ENTRY]))
        try:
            templates.warm({"exec"})
            readiness.watch("sandbox", templates.unready)
            status, _, body = await get(app, "/readyz")
            assert (status, body["Reasons"]) == (503, {"sandbox": "the templates of exec are starting"})
            for _ in range(200):
                if templates.unready() is None:
                    break
                await asyncio.sleep(0.05)
            status, _, body = await get(app, "/readyz")
            assert (status, body) == (200, {"status": "ready"})
            assert [t.key for t in templates.live()] == ["exec"], "ready means the template is up"

            readiness.stopping()
            status, _, body = await get(app, "/readyz")
            assert (status, body["Reasons"]) == (503, {"server": "silo is stopping"})
        finally:
            await templates.close()

    asyncio.run(scenario())


def test_a_template_that_cannot_start_is_not_waited_for_for_ever() -> None:
    """Three failed starts: environments of that kind start from nothing, and the server is ready."""

    async def scenario() -> None:
        templates = Templates(lambda key: TemplateCommand(["/bin/false"]))
        try:
            templates.warm({"python3.11", "exec"})
            assert templates.unready() == "the templates of exec, python3.11 are starting"
            for _ in range(200):
                if templates.unready() is None:
                    break
                await asyncio.sleep(0.05)
            assert templates.unready() is None
            assert templates.live() == []
        finally:
            await templates.close()

    asyncio.run(scenario())
