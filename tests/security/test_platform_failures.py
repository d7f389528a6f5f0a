"""A cgroup that refuses the environment a real server starts (its parent's pids limit reached, so the jail's
first fork in it fails) is silo's failure: a synchronous caller gets ServiceException (500), never the
function's Runtime.InvalidEntrypoint; the server's log names the step; an async event waits it out without
using an attempt, and runs once the host heals."""

from __future__ import annotations

import json
import os
import re
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.support import SiloServer, create_python_function, make_client, signed_request

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the jail needs root; CI runs these as root")

ECHO = "def handler(event, context):\n    return {'tenant': context.tenant_id}\n"


@pytest.fixture()
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SiloServer]:
    # No stems: each new tenant's environment is started by its call. Async retries come soon (the server
    # takes its environment from this process's).
    monkeypatch.setenv("SILO_ASYNC_RETRY_BASE_MS", "600")
    server = SiloServer(tmp_path / "data", "--stems-per-function", "0")
    server.start()
    yield server
    server.stop()


def pids_of_the_environments(server: SiloServer) -> Path:
    """The group every environment's groups sit under, in the pids controller (as the server logs it)."""
    described = re.search(r"environments' cgroups: cgroup v(\d), (\S+)", server.log())
    assert described is not None, server.log()
    if described[1] == "2":
        return Path(described[2])
    root, _, parent = described[2].partition("/{")
    return Path(root) / "pids" / parent.split("}/", 1)[1]


def refusal(client: Any, function: str) -> dict[str, Any]:
    # Not pytest.raises: the exception it keeps holds botocore's frames, and with them a connection.
    try:
        client.invoke(FunctionName=function, TenantId="during")
    except ClientError as exc:
        return dict(exc.response)
    raise AssertionError("the call was answered")


def event(server: SiloServer, function: str, request_id: str) -> dict[str, Any]:
    url = f"/silo/v1/functions/{function}/events/{request_id}"
    with urllib.request.urlopen(signed_request(server.endpoint, url), timeout=10) as answer:
        document: dict[str, Any] = json.loads(answer.read())
    return document


def test_a_cgroup_that_refuses_the_environment_is_a_platform_error(server: SiloServer, unique_name: str) -> None:
    client = make_client(server.endpoint)
    create_python_function(client, unique_name, ECHO, per_tenant=True)
    client.put_function_event_invoke_config(FunctionName=unique_name, MaximumRetryAttempts=0)
    assert client.invoke(FunctionName=unique_name, TenantId="before")["StatusCode"] == 200
    pids = pids_of_the_environments(server)
    pids_max = pids / "pids.max"
    pids_max.write_text(pids.joinpath("pids.current").read_text().strip())
    try:
        error = refusal(client, unique_name)
        assert error["ResponseMetadata"]["HTTPStatusCode"] == 500, error
        assert error["Error"]["Code"] == "ServiceException", error
        assert "the function did not run" in error["Error"]["Message"], error
        queued = client.invoke(FunctionName=unique_name, TenantId="later", InvocationType="Event", Payload=b"{}")
        request_id = queued["ResponseMetadata"]["RequestId"]
        deadline = time.monotonic() + 60
        while event(server, unique_name, request_id)["Throttles"] < 2:
            assert time.monotonic() < deadline, event(server, unique_name, request_id)
            time.sleep(0.1)
    finally:
        pids_max.write_text("max")
    deadline = time.monotonic() + 60
    while (ev := event(server, unique_name, request_id))["State"] != "succeeded":
        assert ev["State"] in ("pending", "running") and time.monotonic() < deadline, ev
        time.sleep(0.1)
    assert ev["Runs"] == 1, ev
    outcomes = [a["Outcome"] for a in ev["Attempts"]]
    assert outcomes[-1] == "success" and set(outcomes[:-1]) == {"unavailable"}, outcomes
    log = server.log()
    assert "fork pid 1 of the new namespaces" in log and "Resource temporarily unavailable" in log, log[-3000:]
    assert "Runtime.InvalidEntrypoint" not in log
