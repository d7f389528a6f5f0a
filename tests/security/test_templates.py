"""Environments forked from a template: nothing of the template, or of an environment forked before,
reaches them; each draws its own randomness; and they behave as environments started from nothing.

These run against a server of their own without stems, so that a new tenant's first call is served by a
fork from the template (the REPORT line says so), and with a small `--template-max-forks` where the test
is about replacing templates.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.compat.test_custom_runtimes import SCRIPT_BOOTSTRAP
from tests.support import (
    ROLE,
    SiloServer,
    call,
    create_python_function,
    forked_call,
    make_client,
    payload_of,
    zip_files,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the jail needs root; CI runs these as root")

MAX_FORKS = 4

PROBE = """
import hashlib, json, os, random, sys, uuid
SECRET_AT_IMPORT = os.environ.get("SECRET", "")
def handler(event, context):
    return {
        "random": [random.random() for _ in range(4)],
        "randbits": random.getrandbits(128),
        "urandom": os.urandom(16).hex(),
        "uuid": str(uuid.uuid4()),
        "hash": hash("silo"),
        "environ": dict(os.environ),
        "fds": sorted(int(fd) for fd in os.listdir("/proc/self/fd")),
        "argv": sys.argv,
        "path": sys.path,
        "executable": sys.executable,
        "cwd": os.getcwd(),
        "modules": sorted(m for m in sys.modules if m == "silo" or m.startswith("silo.")),
        "pid": os.getpid(),
        "secret": SECRET_AT_IMPORT,
    }
"""

# Looks for a value in every readable mapping of its own memory without ever building the value: it gets
# the two halves and compares what follows the first, so a hit means the value was there before the call.
SCANNER = """
import ctypes
def handler(event, context):
    head, tail = event["head"].encode(), event["tail"].encode()
    hits = 0
    with open("/proc/self/maps") as maps:
        regions = [line.split() for line in maps]
    for fields in regions:
        start, end = (int(x, 16) for x in fields[0].split("-"))
        if not fields[1].startswith("r") or (len(fields) > 5 and fields[5].startswith("[v")):
            continue
        data = ctypes.string_at(start, end - start)
        at = data.find(head)
        while at >= 0:
            if data[at + len(head): at + len(head) + len(tail)] == tail:
                hits += 1
            at = data.find(head, at + 1)
    return {"hits": hits}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SiloServer]:
    server = SiloServer(
        tmp_path_factory.mktemp("templates") / "data",
        "--stems-per-function",
        "0",
        "--template-max-forks",
        str(MAX_FORKS),
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(server: SiloServer) -> Any:
    return make_client(server.endpoint)


def template_pids(server: SiloServer) -> list[int]:
    assert server.proc is not None
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == server.proc.pid and b"silo.jail.template" in cmdline:
            found.append(int(entry.name))
    return found


def test_forked_environments_draw_different_random_streams(client: Any) -> None:
    name = f"random-{os.urandom(3).hex()}"
    create_python_function(client, name, PROBE, per_tenant=True)
    first = forked_call(client, name, "a")
    second = forked_call(client, name, "b")
    for field in ("random", "randbits", "urandom", "uuid"):
        assert first[field] != second[field], f"two forked environments drew the same {field}"
    assert first["pid"] == second["pid"] == 1, "each environment is pid 1 of its own pid namespace"


CONNECTIONS = """
import os
def handler(event, context):
    with open("/proc/self/net/tcp") as f:
        states = [line.split()[3] for line in f.readlines()[1:]]
    sockets = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            sockets.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            pass  # the listing's own descriptor, closed by now
    return {"tcp_states": states, "sockets": [s for s in sockets if s.startswith("socket:")]}
"""


def test_forked_python_runtime_reaches_its_runtime_api_over_its_socket_pair(client: Any) -> None:
    name = f"pair-{os.urandom(3).hex()}"
    create_python_function(client, name, CONNECTIONS, per_tenant=True)
    body = forked_call(client, name, "pair")
    # The Runtime API still listens in the environment (for runtimes that connect), but nothing connected over
    # TCP: the runtime's one socket is the pair made in the jail (state 0A is LISTEN).
    assert body["tcp_states"] == ["0A"], body
    assert len(body["sockets"]) == 1, body
    for _ in range(3):
        again, _ = call(client, name, "pair-warm")
        assert again["tcp_states"] == ["0A"], again


def test_forked_environment_sees_nothing_of_the_template(client: Any, server: SiloServer) -> None:
    name = f"clean-{os.urandom(3).hex()}"
    create_python_function(client, name, PROBE, per_tenant=True, Environment={"Variables": {"ONLY_MINE": "yes"}})
    body = forked_call(client, name, "clean")
    assert body["environ"]["ONLY_MINE"] == "yes"
    # Exactly the function's variables and Lambda's, as in an environment started from nothing.
    full = full_start_probe(client, name)
    assert set(body["environ"]) - {"_X_AMZN_TRACE_ID"} == set(full["environ"]) - {"_X_AMZN_TRACE_ID"}
    assert body["fds"] == full["fds"], "a fork keeps no descriptor that a start from nothing does not have"
    for field in ("argv", "path", "executable", "cwd"):
        assert body[field] == full[field], field
    assert body["modules"] == [], "the daemon's own modules are not importable by name in the environment"
    assert not any("pyenv" in p or "/work" in p or "/tmp" in p for p in body["path"]), body["path"]


def full_start_probe(client: Any, name: str) -> dict[str, Any]:
    """The same probe in an environment started from nothing: variables that change how an interpreter
    starts make silo skip the template."""
    other = f"{name}-full"
    create_python_function(
        client,
        other,
        PROBE,
        per_tenant=True,
        Environment={"Variables": {"ONLY_MINE": "yes", "PYTHONHASHSEED": "0"}},
    )
    body, kind = call(client, other, "x")
    assert kind == "ms", f"a function that sets PYTHONHASHSEED must start from nothing, not {kind!r}"
    body["environ"].pop("PYTHONHASHSEED")
    return body


def test_interpreter_start_variables_are_honoured_by_a_full_start(client: Any) -> None:
    name = f"seed-{os.urandom(3).hex()}"
    create_python_function(client, name, PROBE, per_tenant=True, Environment={"Variables": {"PYTHONHASHSEED": "0"}})
    body, kind = call(client, name, "seeded")
    expected = subprocess.run(
        [sys.executable, "-c", "print(hash('silo'))"],
        env={"PYTHONHASHSEED": "0"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert kind == "ms" and body["hash"] == int(expected)


def test_another_functions_secret_is_not_in_a_forked_environment_nor_in_the_template(
    client: Any, server: SiloServer
) -> None:
    head, tail = "silo-secret-" + os.urandom(6).hex(), os.urandom(6).hex()
    holder = f"holder-{os.urandom(3).hex()}"
    create_python_function(client, holder, PROBE, per_tenant=True, Environment={"Variables": {"SECRET": head + tail}})
    assert forked_call(client, holder, "holder")["secret"] == head + tail
    scanner = f"scanner-{os.urandom(3).hex()}"
    create_python_function(client, scanner, SCANNER, per_tenant=True)
    # The scanner finds the value where it is: in an environment of the function that has it.
    control = f"control-{os.urandom(3).hex()}"
    create_python_function(
        client, control, SCANNER, per_tenant=True, Environment={"Variables": {"SECRET": head + tail}}
    )
    assert call(client, control, "control", {"head": head, "tail": tail})[0]["hits"] >= 1
    deadline = time.monotonic() + 30
    while True:
        body, kind = call(client, scanner, f"scan-{os.urandom(4).hex()}", {"head": head, "tail": tail})
        if kind == "(fork)":
            break
        assert time.monotonic() < deadline
    assert body["hits"] == 0, "a forked environment found another function's secret in its memory"
    # The templates themselves never read an environment's description, so they never held it.
    pids = template_pids(server)
    assert pids, "the server runs templates"
    for pid in pids:
        assert (head + tail).encode() not in Path(f"/proc/{pid}/environ").read_bytes()
        assert scan_process(pid, (head + tail).encode()) == 0, f"template {pid} holds another function's secret"


def scan_process(pid: int, needle: bytes) -> int:
    hits = 0
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            fields = line.split()
            start, end = (int(x, 16) for x in fields[0].split("-"))
            if "r" not in fields[1] or fields[-1].startswith("[v"):
                continue
            try:
                mem.seek(start)
                hits += mem.read(end - start).count(needle)
            except (OSError, OverflowError, ValueError):
                continue
    return hits


def test_templates_are_replaced_after_max_forks_and_drained(client: Any, server: SiloServer) -> None:
    name = f"rotate-{os.urandom(3).hex()}"
    create_python_function(client, name, PROBE, per_tenant=True)
    seeds = [forked_call(client, name, "r")["hash"]]
    for _ in range(3 * MAX_FORKS):
        body, kind = call(client, name, f"r-{os.urandom(4).hex()}")
        if kind == "(fork)":
            seeds.append(body["hash"])
    # Environments of one template share its hash seed; a replacement has its own.
    assert len(set(seeds)) >= 2, "the template was never replaced"
    assert max(seeds.count(s) for s in set(seeds)) <= 2 * MAX_FORKS
    # Replaced templates end once the last environment they forked has; the current ones stay.
    for function in client.list_functions()["Functions"]:
        client.delete_function(FunctionName=function["FunctionName"])
    deadline = time.monotonic() + 20
    while len(template_pids(server)) > 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert 1 <= len(template_pids(server)) <= 2, "one current template per runtime used (python, custom)"


def test_environments_of_a_killed_template_are_replaced(client: Any, server: SiloServer) -> None:
    name = f"orphan-{os.urandom(3).hex()}"
    create_python_function(client, name, PROBE, per_tenant=True)
    forked_call(client, name, "warm")
    tenant = f"t-{os.urandom(4).hex()}"
    call(client, name, tenant)
    for pid in template_pids(server):
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)
    body, kind = call(client, name, tenant)
    assert kind != "warm", "the environment died with its template, so the tenant gets a new one"
    assert body["pid"] == 1
    forked_call(client, name, "again")  # and a new template forks again
    assert "Traceback" not in server.log()


def test_custom_runtime_is_forked_from_a_template(client: Any) -> None:
    name = f"custom-{os.urandom(3).hex()}"
    client.create_function(
        FunctionName=name,
        Runtime="provided.al2023",
        Role=ROLE,
        Handler="custom.handler",
        Code={"ZipFile": zip_files({"bootstrap": SCRIPT_BOOTSTRAP}, {"bootstrap": 0o755})},
        TenancyConfig={"TenantIsolationMode": "PER_TENANT"},
    )
    client.get_waiter("function_active_v2").wait(FunctionName=name)
    out = forked_call(client, name, "c")
    assert out["handler"] == "custom.handler" and out["tenant"].startswith("c-")


def test_many_forked_environments_at_once_all_answer_and_stay_warm(client: Any) -> None:
    # Launchers leave while others are forked and pid 1s arm their death signal: none may die of the other.
    name = f"many-{os.urandom(3).hex()}"
    create_python_function(
        client, name, "def handler(event, context):\n    return context.tenant_id\n", per_tenant=True
    )
    forked_call(client, name, "first")
    tenants = [f"t{i}" for i in range(160)]
    failures: list[Any] = []

    def calls(chunk: list[str], expect_warm: bool) -> None:
        for tenant in chunk:
            response = client.invoke(FunctionName=name, TenantId=tenant, LogType="Tail")
            tail = base64.b64decode(response["LogResult"]).decode()
            if "FunctionError" in response or payload_of(response) != tenant:
                failures.append(payload_of(response))
            elif expect_warm and "Init Duration" in tail:
                failures.append(f"{tenant} was not warm on its second call")

    for expect_warm in (False, True):
        threads = [threading.Thread(target=calls, args=(tenants[i::4], expect_warm)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert failures == [], failures[:5]
