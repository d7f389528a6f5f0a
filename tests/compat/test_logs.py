"""Logs by tenant against a real `silo serve`: streams, request ids, Tail, JSON records, levels, retention, CLI."""

from __future__ import annotations

import base64
import json
import os
import selectors
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest

from silo.cli.client import ApiError
from tests.support import SiloServer, api_client, aws_env, create_python_function, make_client

CHATTY = """
import logging
def handler(event, context):
    print("print", event["mark"], context.tenant_id)
    logging.getLogger("app").warning("logging %s", event["mark"])
    if event.get("fail"):
        raise ValueError("failed " + event["mark"])
    return event["mark"]
"""

LEVELS = """
import logging
log = logging.getLogger("levels")
def handler(event, context):
    log.debug("debug-line")
    log.info("info-line")
    log.warning("warn-line")
    return 1
"""


def invoke(client: Any, name: str, tenant: str | None, payload: Any, **kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {"FunctionName": name, "Payload": json.dumps(payload).encode(), **kw}
    if tenant is not None:
        args["TenantId"] = tenant
    response: dict[str, Any] = client.invoke(**args)
    response["RequestId"] = response["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]
    return response


def read_logs(endpoint: str, name: str, **params: Any) -> dict[str, Any]:
    query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
    path = f"/silo/v1/functions/{urllib.parse.quote(name, safe='')}/logs?{query}"
    page: dict[str, Any] = api_client(endpoint).json("GET", path)
    return page


def messages(page: dict[str, Any]) -> list[str]:
    return [e["Message"] for e in page["Events"]]


def test_print_and_logging_land_in_their_tenant_stream(lambda_client: Any, unique_name: str, silo_server: Any) -> None:
    create_python_function(lambda_client, unique_name, CHATTY, per_tenant=True)
    calls: dict[str, list[str]] = {"blue": [], "green": []}
    for i in range(3):
        for tenant in calls:
            response = invoke(lambda_client, unique_name, tenant, {"mark": f"{tenant}-{i}"})
            calls[tenant].append(response["RequestId"])

    streams: dict[str, set[str]] = {}
    for tenant, request_ids in calls.items():
        page = read_logs(silo_server.endpoint, unique_name, tenant=tenant, limit=1000)
        events = page["Events"]
        assert events, f"no log events for {tenant}"
        assert {e["TenantId"] for e in events} == {tenant}
        other = "green" if tenant == "blue" else "blue"
        assert not any(other in e["Message"] for e in events), "another tenant's lines in this tenant's log"
        streams[tenant] = {e["LogStreamName"] for e in events}
        for i, request_id in enumerate(request_ids):
            mine = [e for e in events if e["RequestId"] == request_id]
            text = [e["Message"] for e in mine]
            assert text[0] == f"START RequestId: {request_id} Version: $LATEST"
            assert f"print {tenant}-{i} {tenant}" in text
            assert any(m.startswith("[WARNING]") and f"logging {tenant}-{i}" in m for m in text)
            assert f"END RequestId: {request_id}" in text
            assert text[-1].startswith(f"REPORT RequestId: {request_id}\tDuration: ")
            assert "Memory Size: 128 MB" in text[-1]
        # Lines are stored in order, newest last.
        ids = [int(e["EventId"]) for e in events]
        assert ids == sorted(ids)
    assert streams["blue"].isdisjoint(streams["green"]), "two tenants share a log stream"
    for names in streams.values():
        for stream in names:
            assert len(stream.split("/")) == 4 and "[$LATEST]" in stream

    # One call's lines, by request id.
    request_id = calls["green"][1]
    page = read_logs(silo_server.endpoint, unique_name, request_id=request_id)
    assert {e["RequestId"] for e in page["Events"]} == {request_id}
    assert "print green-1 green" in messages(page)


def test_tail_is_the_last_4_kb_of_that_invocation(lambda_client: Any, unique_name: str, silo_server: Any) -> None:
    source = (
        "def handler(event, context):\n"
        "    for i in range(200):\n"
        "        print(event['mark'], i, 'x' * 40)\n"
        "    return 1\n"
    )
    create_python_function(lambda_client, unique_name, source, per_tenant=True)
    invoke(lambda_client, unique_name, "t", {"mark": "first"})
    response = invoke(lambda_client, unique_name, "t", {"mark": "second"}, LogType="Tail")
    tail = base64.b64decode(response["LogResult"])
    assert 4000 < len(tail) <= 4096
    text = tail.decode()
    assert "first" not in text, "the tail holds another invocation's lines"
    assert text.rstrip("\t\n").split("\n")[-1].startswith(f"REPORT RequestId: {response['RequestId']}")
    assert "second 199 " in text
    # It is the end of what the log store holds for that call.
    stored = "\n".join(messages(read_logs(silo_server.endpoint, unique_name, request_id=response["RequestId"])))
    assert stored.endswith(text.rstrip("\n").split("\n", 1)[1].rstrip("\n"))


def test_json_records_carry_the_tenant(lambda_client: Any, unique_name: str, silo_server: Any) -> None:
    create_python_function(lambda_client, unique_name, CHATTY, per_tenant=True, LoggingConfig={"LogFormat": "JSON"})
    response = invoke(lambda_client, unique_name, "BlueTenant", {"mark": "json"}, LogType="Tail")
    request_id = response["RequestId"]
    page = read_logs(silo_server.endpoint, unique_name, request_id=request_id)
    records = [json.loads(m) for m in messages(page) if m.startswith("{")]
    by_type = {r.get("type"): r for r in records if "type" in r}
    start = by_type["platform.start"]["record"]
    assert start["requestId"] == request_id and start["tenantId"] == "BlueTenant"
    assert start["version"] == "$LATEST"
    report = by_type["platform.report"]["record"]
    assert report["tenantId"] == "BlueTenant" and report["status"] == "success"
    assert report["metrics"]["memorySizeMB"] == 128 and "durationMs" in report["metrics"]
    assert "initDurationMs" in report["metrics"]
    assert "platform.runtimeDone" not in by_type, "runtimeDone is DEBUG; the default SystemLogLevel is INFO"
    app = [r for r in records if r.get("logger") == "app"]
    assert app and app[0]["message"] == "logging json"
    assert app[0]["tenantId"] == "BlueTenant" and app[0]["requestId"] == request_id
    assert not any(m.startswith(("START", "END", "REPORT")) for m in messages(page))
    # The tail is the same JSON.
    assert '"type":"platform.report"' in base64.b64decode(response["LogResult"]).decode()

    failed = invoke(lambda_client, unique_name, "BlueTenant", {"mark": "boom", "fail": True})
    page = read_logs(silo_server.endpoint, unique_name, request_id=failed["RequestId"])
    records = [json.loads(m) for m in messages(page) if m.startswith("{")]
    report = next(r for r in records if r.get("type") == "platform.report")["record"]
    assert report["status"] == "error"
    error = next(r for r in records if r.get("level") == "ERROR")
    assert error["tenantId"] == "BlueTenant" and error["errorType"] == "ValueError"


def test_log_levels_filter(lambda_client: Any, unique_name: str, silo_server: Any) -> None:
    create_python_function(
        lambda_client,
        unique_name,
        LEVELS,
        per_tenant=True,
        LoggingConfig={"LogFormat": "JSON", "ApplicationLogLevel": "WARN", "SystemLogLevel": "DEBUG"},
    )
    request_id = invoke(lambda_client, unique_name, "t", {})["RequestId"]
    records = [json.loads(m) for m in messages(read_logs(silo_server.endpoint, unique_name, request_id=request_id))]
    app = [r["message"] for r in records if r.get("logger") == "levels"]
    assert app == ["warn-line"]
    types = [r.get("type") for r in records if "type" in r]
    assert types == ["platform.start", "platform.runtimeDone", "platform.report"]
    assert all(r["record"]["tenantId"] == "t" for r in records if "type" in r)

    lambda_client.update_function_configuration(
        FunctionName=unique_name,
        LoggingConfig={"LogFormat": "JSON", "ApplicationLogLevel": "DEBUG", "SystemLogLevel": "WARN"},
    )
    lambda_client.get_waiter("function_updated_v2").wait(FunctionName=unique_name)
    request_id = invoke(lambda_client, unique_name, "t", {})["RequestId"]
    records = [json.loads(m) for m in messages(read_logs(silo_server.endpoint, unique_name, request_id=request_id))]
    assert [r["message"] for r in records if r.get("logger") == "levels"] == ["debug-line", "info-line", "warn-line"]
    assert not [r for r in records if "type" in r], "SystemLogLevel WARN drops start and report"


def test_reading_pages_and_filters(lambda_client: Any, unique_name: str, silo_server: Any) -> None:
    create_python_function(lambda_client, unique_name, CHATTY)
    for i in range(3):
        invoke(lambda_client, unique_name, None, {"mark": f"m{i}"})
    everything = read_logs(silo_server.endpoint, unique_name, limit=1000)["Events"]
    assert all(e["TenantId"] is None for e in everything)
    newest = read_logs(silo_server.endpoint, unique_name, limit=2)
    assert newest["Events"] == everything[-2:]
    # Forward from the start, two at a time, with the cursor.
    seen: list[dict[str, Any]] = []
    page = read_logs(silo_server.endpoint, unique_name, since="10m", limit=2)
    seen += page["Events"]
    while page["HasMore"]:
        page = read_logs(silo_server.endpoint, unique_name, cursor=page["NextToken"], limit=2)
        seen += page["Events"]
    assert seen == everything
    assert read_logs(silo_server.endpoint, unique_name, cursor=page["NextToken"])["Events"] == []
    assert read_logs(silo_server.endpoint, unique_name, since=str(2**50))["Events"] == []
    with pytest.raises(ApiError) as bad:
        read_logs(silo_server.endpoint, unique_name, since="yesterday-ish")
    assert bad.value.code == "InvalidParameterValueException" and "since" in bad.value.message
    with pytest.raises(ApiError) as missing:
        read_logs(silo_server.endpoint, unique_name + "-nope")
    assert missing.value.code == "ResourceNotFoundException"


def test_logs_survive_a_restart(lambda_client: Any, unique_name: str, silo_server: Any) -> None:
    create_python_function(lambda_client, unique_name, CHATTY, per_tenant=True)
    request_id = invoke(lambda_client, unique_name, "kept", {"mark": "before-restart"})["RequestId"]
    silo_server.restart()
    page = read_logs(silo_server.endpoint, unique_name, tenant="kept")
    assert "print before-restart kept" in messages(page)
    assert {e["RequestId"] for e in page["Events"]} == {request_id}


@pytest.fixture(scope="module")
def small_retention_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SiloServer]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SILO_LOG_RETENTION_MB", "1")
        server = SiloServer(tmp_path_factory.mktemp("retention") / "data")
        server.start()
    yield server
    server.stop()


def test_retention_drops_the_oldest_first(small_retention_server: SiloServer, unique_name: str) -> None:
    client = make_client(small_retention_server.endpoint)
    source = (
        "def handler(event, context):\n"
        "    for i in range(400):\n"
        "        print(event['mark'], i, 'y' * 1000)\n"
        "    return 1\n"
    )
    create_python_function(client, unique_name, source, per_tenant=True)
    marks = [f"call{i}" for i in range(6)]  # about 400 KB each: 2.4 MB against a 1 MB budget
    for mark in marks:
        invoke(client, unique_name, "t", {"mark": mark})
    events = read_logs(small_retention_server.endpoint, unique_name, since="1h", limit=10_000)["Events"]
    stored = sum(len(e["Message"]) for e in events)
    assert stored <= 1024 * 1024
    present = [mark for mark in marks if any(e["Message"].startswith(mark + " ") for e in events)]
    assert present and present == marks[len(marks) - len(present) :], "retention must drop the oldest lines first"
    assert "call0" not in present and "call5" in present
    assert any(e["Message"].startswith("call5 399 ") for e in events), "the newest lines are all kept"


def silo_cli(endpoint: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "silo", *args, "--endpoint", endpoint],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **aws_env(endpoint)},
    )


def test_cli_filters_by_tenant_and_request(lambda_client: Any, unique_name: str, silo_server: Any) -> None:
    create_python_function(lambda_client, unique_name, CHATTY, per_tenant=True)
    red = invoke(lambda_client, unique_name, "red", {"mark": "red-call"})["RequestId"]
    invoke(lambda_client, unique_name, "red", {"mark": "red-again"})
    invoke(lambda_client, unique_name, "teal", {"mark": "teal-call"})

    out = silo_cli(silo_server.endpoint, "logs", unique_name, "--tenant", "red")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert any("print red-call red" in line for line in lines)
    assert any("print red-again red" in line for line in lines)
    assert not any("teal" in line for line in lines)
    assert all(line.split(" ")[1] == "red" for line in lines), "each line names its tenant"

    out = silo_cli(silo_server.endpoint, "logs", unique_name, "--request-id", red, "--since", "1h")
    assert out.returncode == 0, out.stderr
    assert any(f"START RequestId: {red}" in line for line in out.stdout.splitlines())
    assert "red-again" not in out.stdout and "teal" not in out.stdout

    out = silo_cli(silo_server.endpoint, "logs", unique_name + "-missing")
    assert out.returncode == 1
    assert "ResourceNotFoundException" in out.stderr

    out = silo_cli(silo_server.endpoint, "logs", unique_name, "--since", "whenever")
    assert out.returncode == 1 and "since" in out.stderr


def test_cli_follow_prints_new_lines(lambda_client: Any, unique_name: str, silo_server: Any) -> None:
    create_python_function(lambda_client, unique_name, CHATTY, per_tenant=True)
    invoke(lambda_client, unique_name, "old", {"mark": "before-follow"})
    follower = subprocess.Popen(
        [sys.executable, "-m", "silo", "logs", unique_name, "--follow", "--endpoint", silo_server.endpoint],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **silo_server.aws_env()},
    )
    try:
        assert follower.stdout is not None
        fd = follower.stdout.fileno()
        seen = ""
        invoke(lambda_client, unique_name, "new", {"mark": "while-following"})
        selector = selectors.DefaultSelector()
        selector.register(fd, selectors.EVENT_READ)
        deadline = time.monotonic() + 60
        while "print while-following new" not in seen:
            assert time.monotonic() < deadline, f"--follow printed only {seen}"
            if selector.select(timeout=1):
                seen += os.read(fd, 65536).decode()
        selector.close()
        assert "print before-follow old" in seen, "it starts with what is already there"
    finally:
        follower.send_signal(signal.SIGINT)
        _, err = follower.communicate(timeout=30)
    assert follower.returncode == 0, err
