"""Handlers that attack the jail. Each attack must fail, and other tenants must not notice it.

The attacking function runs whatever Python it is sent, as hostile tenant code would; every test
runs it through the real server with the default backend, which is the jail when run as root.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import ROLE, TIME_SCALE, SiloServer, forked_call, payload_of, python_runtime, zip_files

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the jail needs root; CI runs these as root")

ATTACKER = """
import json, os, traceback
def handler(event, context):
    scope = {"result": None}
    try:
        exec(event["code"], scope)
    except BaseException as exc:
        return {"raised": type(exc).__name__, "error": str(exc), "trace": traceback.format_exc()}
    return {"result": scope["result"]}
"""


@pytest.fixture(scope="module", params=["forked", "started from nothing"])
def silo_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SiloServer]:
    """Every attack runs twice: in environments forked from a template (no stems, so each new tenant's
    first call is a fork) and in environments started from nothing (no templates)."""
    args = ("--stems-per-function", "0") if request.param == "forked" else ("--template-max-forks", "0")
    server = SiloServer(tmp_path_factory.mktemp("attacks") / "data", *args)
    server.start()
    server.forked = request.param == "forked"  # type: ignore[attr-defined]
    yield server
    server.stop()


@pytest.fixture(scope="module")
def attacker(silo_server: SiloServer) -> str:
    from tests.support import make_client

    client = make_client(silo_server.endpoint)
    name = f"attacker-{os.urandom(3).hex()}"
    client.create_function(
        FunctionName=name,
        Runtime=python_runtime(),
        Role=ROLE,
        Handler="app.handler",
        Code={"ZipFile": zip_files({"app.py": ATTACKER})},
        TenancyConfig={"TenantIsolationMode": "PER_TENANT"},
        MemorySize=128,
        # Walking /proc takes a second here, and more than ten in the cgroup-v2 VM (tests/cgroup2).
        Timeout=min(900, int(10 * TIME_SCALE)),
        EphemeralStorage={"Size": 512},
    )
    client.get_waiter("function_active_v2").wait(FunctionName=name)
    if getattr(silo_server, "forked", False):
        # From here on the template is up, so every new tenant's environment is a fork.
        forked_call(client, name, "first", {"code": "result = 1"})
    return name


def run(client: Any, function: str, tenant: str, code: str) -> dict[str, Any]:
    response = client.invoke(
        FunctionName=function, TenantId=tenant, Payload=json.dumps({"code": textwrap.dedent(code)}).encode()
    )
    out: dict[str, Any] = payload_of(response)
    out["_function_error"] = response.get("FunctionError")
    return out


def test_backend_is_the_jail(silo_server: SiloServer) -> None:
    assert "jail" in silo_server.log() and "does NOT isolate" not in silo_server.log()


def test_other_tenants_tmp_and_memory_are_invisible(lambda_client: Any, attacker: str) -> None:
    secret = os.urandom(8).hex()
    run(
        lambda_client,
        attacker,
        "victim",
        f"""
        open("/tmp/secret.txt", "w").write("{secret}")
        import builtins; builtins.SECRET = "{secret}"
        result = True
    """,
    )
    found = run(
        lambda_client,
        attacker,
        "thief",
        f"""
        import os, glob
        hits = []
        for top in ("/tmp", "/proc", "/var", "/etc", "/dev"):
            for root, dirs, files in os.walk(top):
                if root.startswith(("/proc/sys", "/sys")) or root.count("/") > 6:
                    dirs[:] = []
                for f in files:
                    p = os.path.join(root, f)
                    if f in ("environ", "cmdline", "maps") or f.endswith(".txt"):
                        try:
                            if "{secret}".encode() in open(p, "rb").read(1 << 20):
                                hits.append(p)
                        except OSError:
                            pass
        result = {{"hits": hits, "tmp": os.listdir("/tmp")}}
    """,
    )
    assert found["result"]["hits"] == [], found
    assert "secret.txt" not in found["result"]["tmp"]
    mine = run(lambda_client, attacker, "victim", "import builtins; result = builtins.SECRET")
    assert mine["result"] == secret, "the victim's own warm environment still has its state"


def test_processes_outside_are_invisible_and_unreachable(lambda_client: Any, attacker: str) -> None:
    out = run(
        lambda_client,
        attacker,
        "ps",
        """
        import os, signal
        pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
        denied = []
        for target in (1, 2, 300, os.getppid() or 1):
            try:
                os.kill(target + 100000 if target == 1 else target, 0)
            except (ProcessLookupError, PermissionError) as exc:
                denied.append(type(exc).__name__)
        result = {"pids": pids, "denied": denied, "me": os.getpid(),
                  "environ_readable": [p for p in pids
                                       if p != os.getpid() and os.access(f"/proc/{p}/environ", os.R_OK)]}
    """,
    )
    result = out["result"]
    assert result["pids"] == [1] or set(result["pids"]) <= {1, result["me"]}, result
    assert result["environ_readable"] == []
    host_pid = os.getpid()
    killed = run(
        lambda_client,
        attacker,
        "ps",
        f"""
        import os, signal
        try:
            os.kill({host_pid}, signal.SIGKILL)
            result = "sent"
        except ProcessLookupError:
            result = "no such process"
    """,
    )
    assert killed["result"] == "no such process"


def test_no_route_to_host_services(lambda_client: Any, attacker: str, silo_server: SiloServer) -> None:
    ports = [silo_server.port, 5432, 6379, 4222]
    out = run(
        lambda_client,
        attacker,
        "net",
        f"""
        import socket
        result = {{}}
        for host in ("127.0.0.1", "10.0.2.2", "172.17.0.1", "169.254.169.254"):
            for port in {ports}:
                s = socket.socket()
                s.settimeout(1)
                try:
                    s.connect((host, port))
                    result[f"{{host}}:{{port}}"] = "connected"
                except OSError as exc:
                    result[f"{{host}}:{{port}}"] = type(exc).__name__
                finally:
                    s.close()
        import os
        result["interfaces"] = sorted(os.listdir("/sys/class/net")) if os.path.exists("/sys/class/net") else "no /sys"
    """,
    )
    connected = [k for k, v in out["result"].items() if v == "connected"]
    assert connected == [], out["result"]
    # The check itself can fail: on the host these ports do answer.
    with socket.create_connection(("127.0.0.1", silo_server.port), timeout=2):
        pass


def test_code_and_root_are_read_only(lambda_client: Any, attacker: str) -> None:
    out = run(
        lambda_client,
        attacker,
        "writer",
        """
        import errno
        result = {}
        for path in ("/var/task/app.py", "/var/task/new.py", "/usr/bin/evil", "/etc/passwd", "/evil", "/var/runtime/x"):
            try:
                open(path, "a").write("x")
                result[path] = "written"
            except OSError as exc:
                result[path] = errno.errorcode.get(exc.errno, str(exc.errno))
    """,
    )
    assert "written" not in out["result"].values(), out


def test_host_secrets_and_devices_are_absent(lambda_client: Any, attacker: str, silo_server: SiloServer) -> None:
    out = run(
        lambda_client,
        attacker,
        "snoop",
        f"""
        import os
        result = {{
            "exists": [p for p in ("/etc/shadow", "/root", "/home", "{silo_server.data_dir}", "/work", "/sys",
                                    "/dev/sda", "/dev/vda", "/dev/mem", "/dev/kmsg", "/run", "/var/lib")
                       if os.path.exists(p)],
            "dev": sorted(os.listdir("/dev")),
        }}
    """,
    )
    assert out["result"]["exists"] == [], out
    assert set(out["result"]["dev"]) <= {"null", "zero", "random", "urandom", "fd", "stdin", "stdout", "stderr"}


def test_identity_is_unprivileged_and_unique(lambda_client: Any, attacker: str) -> None:
    ids = {}
    for tenant in ("id-a", "id-b"):
        ids[tenant] = run(
            lambda_client,
            attacker,
            tenant,
            """
            import os, resource
            status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (1 << 20, 1 << 20))
                raised = True
            except (ValueError, OSError):
                raised = False
            result = {"uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(), "groups": os.getgroups(),
                      "caps": {k: status[k].strip() for k in ("CapEff", "CapPrm", "CapBnd", "CapAmb")},
                      "nnp": status["NoNewPrivs"].strip(), "seccomp": status["Seccomp"].strip(),
                      "nofile": resource.getrlimit(resource.RLIMIT_NOFILE), "raised": raised}
        """,
        )["result"]
    a, b = ids["id-a"], ids["id-b"]
    for r in (a, b):
        assert r["uid"] != 0 and r["euid"] != 0 and r["gid"] != 0
        assert set(r["caps"].values()) == {"0000000000000000"}
        assert r["nnp"] == "1"
        assert r["seccomp"] == "2", "a seccomp filter is installed"
        assert r["nofile"] == [1024, 1024] and not r["raised"], "Lambda's 1,024 open files, not the daemon's"
    assert a["uid"] != b["uid"], "two live environments never share a uid"


@pytest.mark.parametrize(
    "attack",
    [
        "import ctypes; libc = ctypes.CDLL(None, use_errno=True); "
        "r = libc.mount(b'tmpfs', b'/tmp', b'tmpfs', 0, None); result = (r, ctypes.get_errno())",
        "import ctypes; libc = ctypes.CDLL(None, use_errno=True); "
        "r = libc.unshare(0x10000000); result = (r, ctypes.get_errno())",
        "import ctypes; libc = ctypes.CDLL(None, use_errno=True); "
        "r = libc.ptrace(0, 0, 0, 0); result = (r, ctypes.get_errno())",
        "import ctypes; libc = ctypes.CDLL(None, use_errno=True); "
        "r = libc.setns(0, 0); result = (r, ctypes.get_errno())",
        "import socket; socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP); result = 'opened'",
        "import socket; socket.socket(socket.AF_PACKET, socket.SOCK_RAW); result = 'opened'",
        "import os; os.chroot('/tmp'); result = 'chrooted'",
        "import os; os.setuid(0); result = 'root'",
    ],
    ids=["mount", "unshare-user", "ptrace", "setns", "raw-inet", "packet", "chroot", "setuid"],
)
def test_kernel_surface_is_refused(lambda_client: Any, attacker: str, attack: str) -> None:
    out = run(lambda_client, attacker, "kernel", attack)
    if "raised" in out:
        assert out["raised"] in ("PermissionError", "OSError"), out
        return
    ret, err = out["result"]
    assert ret == -1 and err in (1, 38), out  # EPERM, or ENOSYS


def test_setuid_binaries_give_nothing(lambda_client: Any, attacker: str) -> None:
    out = run(
        lambda_client,
        attacker,
        "suid",
        """
        import os, stat, subprocess, time
        target = next(p for p in ("/usr/bin/su", "/usr/bin/passwd", "/usr/bin/newgrp")
                      if os.path.exists(p) and os.stat(p).st_mode & stat.S_ISUID)
        seen = set()
        for _ in range(20):
            child = subprocess.Popen([target], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            while child.poll() is None:
                try:
                    for line in open(f"/proc/{child.pid}/status"):
                        if line.startswith("Uid:"):
                            seen.add(int(line.split()[2]))
                except OSError:
                    pass
                time.sleep(0.001)
            if seen:
                break
        result = {"target": target, "euids": sorted(seen), "me": os.getuid()}
    """,
    )
    result = out["result"]
    assert result["euids"], out
    assert 0 not in result["euids"], "a setuid-root binary ran as root inside the environment"


def test_memory_bomb_kills_only_its_environment(lambda_client: Any, attacker: str) -> None:
    run(lambda_client, attacker, "bomber", "import builtins; builtins.MARK = 1; result = 1")
    bystander = run(lambda_client, attacker, "bystander", "import builtins; builtins.MARK = 'b'; result = 1")
    assert bystander["result"] == 1
    out = run(lambda_client, attacker, "bomber", "blocks = []\nwhile True:\n    blocks.append(bytearray(16 << 20))")
    assert out["_function_error"] == "Unhandled"
    assert out.get("errorType") in ("Runtime.OutOfMemory", "Runtime.ExitError"), out
    fresh = run(lambda_client, attacker, "bomber", "import builtins; result = getattr(builtins, 'MARK', None)")
    assert fresh["result"] is None, "the next call of that tenant gets a fresh environment"
    still = run(lambda_client, attacker, "bystander", "import builtins; result = builtins.MARK")
    assert still["result"] == "b", "the other tenant's environment was not touched"


def test_fork_bomb_is_contained(lambda_client: Any, attacker: str) -> None:
    out = run(
        lambda_client,
        attacker,
        "forker",
        """
        import os, time
        children = 0
        error = None
        try:
            for _ in range(5000):
                pid = os.fork()
                if pid == 0:
                    time.sleep(30)
                    os._exit(0)
                children += 1
        except OSError as exc:
            error = exc.errno
        result = {"children": children, "error": error}
    """,
    )
    if "result" in out:
        assert out["result"]["error"] is not None and out["result"]["children"] < 1100, out
    else:
        # Forked Pythons run the environment out of memory before they run it out of pids: also contained.
        assert out["errorType"] in ("Runtime.OutOfMemory", "Runtime.ExitError"), out
    other = run(lambda_client, attacker, "not-forker", "result = 'fine'")
    assert other["result"] == "fine"


def test_pids_are_capped(lambda_client: Any, attacker: str) -> None:
    out = run(
        lambda_client,
        attacker,
        "threader",
        """
        import threading
        threading.stack_size(64 * 1024)
        stop = threading.Event()
        started = 0
        error = None
        try:
            for _ in range(3000):
                threading.Thread(target=stop.wait, daemon=True).start()
                started += 1
        except RuntimeError as exc:
            error = str(exc)
        stop.set()
        result = {"started": started, "error": error}
    """,
    )
    assert "result" in out, out
    assert out["result"]["error"] and out["result"]["started"] < 1024, out


def test_tmp_is_capped(lambda_client: Any, attacker: str) -> None:
    out = run(
        lambda_client,
        attacker,
        "filler",
        """
        import errno
        written = 0
        try:
            with open("/tmp/fill", "wb") as f:
                for _ in range(2048):
                    f.write(b"x" * (1 << 20))
                    written += 1
        except OSError as exc:
            result = {"errno": errno.errorcode[exc.errno], "mb": written}
        else:
            result = {"errno": None, "mb": written}
    """,
    )
    if "raised" in out or out["_function_error"]:
        # Filling /tmp can also run the environment out of memory; either way it is contained.
        assert out.get("errorType") in (None, "Runtime.OutOfMemory", "Runtime.ExitError"), out
    else:
        assert out["result"]["errno"] == "ENOSPC" and out["result"]["mb"] <= 512, out


def test_background_process_dies_with_its_environment(
    lambda_client: Any, attacker: str, silo_server: SiloServer
) -> None:
    marker = f"{os.getpid() % 1000}.{os.urandom(2).hex()}"
    marker = str(1000 + int(marker.split(".")[1], 16) % 1000) + ".123"
    run(
        lambda_client,
        attacker,
        "lingerer",
        f"""
        import subprocess, os
        subprocess.Popen(["/usr/bin/sleep", "{marker}"], start_new_session=True)
        result = os.getpid()
    """,
    )

    def sleepers() -> list[int]:
        found = []
        for pid in (p for p in os.listdir("/proc") if p.isdigit()):
            try:
                if marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                    found.append(int(pid))
            except OSError:
                pass
        return found

    assert sleepers(), "the background process runs while its environment lives"
    lambda_client.update_function_configuration(FunctionName=attacker, Description=os.urandom(4).hex())
    lambda_client.get_waiter("function_updated_v2").wait(FunctionName=attacker)
    import time

    deadline = time.monotonic() + 10
    while sleepers() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sleepers() == [], "retiring the environment killed everything it started"


def test_cpu_hog_does_not_stop_other_tenants(lambda_client: Any, attacker: str, silo_server: SiloServer) -> None:
    import threading

    def hog() -> None:
        run(lambda_client, attacker, "hog", "import time\nend = time.time() + 4\nwhile time.time() < end:\n    pass")

    thread = threading.Thread(target=hog)
    thread.start()
    try:
        answers = [run(lambda_client, attacker, f"calm-{i}", "result = 42")["result"] for i in range(5)]
    finally:
        thread.join()
    assert answers == [42] * 5
    assert silo_server.alive()


# Kernel-wide activity that /proc shows to anyone: other tenants' CPU time, interrupts, I/O, memory
# and swap use, pressure, scheduler and timer state, kernel symbols, file locks with the host's pids.
HOST_WIDE = (
    "diskstats",
    "vmstat",
    "interrupts",
    "softirqs",
    "schedstat",
    "sched_debug",
    "timer_list",
    "kallsyms",
    "zoneinfo",
    "buddyinfo",
    "locks",
    "swaps",
    "cgroups",
    "pressure/cpu",
    "pressure/io",
    "pressure/memory",
    "pressure/irq",
)


def test_proc_shows_nothing_host_wide(lambda_client: Any, attacker: str, silo_server: SiloServer) -> None:
    out = run(
        lambda_client,
        attacker,
        "procfs",
        f"""
        import os, subprocess
        def read(path):
            try:
                with open(path) as f:
                    return f.read()
            except OSError as exc:
                return type(exc).__name__
        result = {{name: read("/proc/" + name) for name in {HOST_WIDE!r} + ("loadavg", "stat", "meminfo")}}
        result["mountinfo"] = read("/proc/self/mountinfo")
        # Another process of the environment, with a /proc/<pid> of its own.
        result["child mountinfo"] = subprocess.run(["/bin/cat", "/proc/self/mountinfo"], capture_output=True,
                                                   text=True).stdout
    """,
    )
    seen = out["result"]
    assert seen is not None, out
    hidden = ("", "FileNotFoundError", "PermissionError")  # empty, or not there, or only root's
    shown = {name: seen[name][:200] for name in HOST_WIDE if seen[name] not in hidden}
    assert shown == {}, "these show the host's activity"
    assert seen["loadavg"] == "0.00 0.00 0.00 1/1 1\n"
    counters = {row[0]: row[1:] for row in (line.split() for line in seen["stat"].splitlines())}
    assert counters.pop("procs_running") == ["1"] and int(counters.pop("btime")[0]) > 0, seen["stat"]
    assert {v for row in counters.values() for v in row} == {"0"}, "no CPU time, interrupt or process of anyone"
    assert counters["cpu"] == ["0"] * 10 and "cpu0" in counters
    meminfo = dict(line.split(":", 1) for line in seen["meminfo"].splitlines())
    assert meminfo["MemTotal"].split() == [str(128 * 1024), "kB"], "the environment's own memory, as on Lambda"
    # Mount sources: no path of the data directory, of the tests' directories, of silo or of the interpreter.
    secrets = [str(silo_server.data_dir.parent.parent), str(Path(__file__).resolve().parents[2]), sys.prefix]
    for name in ("mountinfo", "child mountinfo"):
        assert seen[name].count("\n") > 5, seen[name]
        leaked = [line for line in seen[name].splitlines() if any(s in line for s in secrets)]
        assert leaked == [], f"{name} shows host paths"
