"""The attack suite against the gVisor backend: a function whose silo setting is Sandbox=gvisor.

The attacks of test_attacks.py whose evidence holds in any isolating backend are imported as they are
and run here against this module's `attacker` (pytest resolves fixtures where a test is collected).
The others look at things gVisor's kernel shows differently (its own /proc, /sys and /dev, pid 1
being silo's relay, processes that are not host processes): they attack the same promise and check it
with evidence that this backend can fail.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from silo.sandbox.gvisor import CGROUP_PARENT
from tests.compat.test_custom_runtimes import _zip_tree, awslambdaric_dir  # noqa: F401 (a fixture)
from tests.compat.test_invoke import COUNTER
from tests.security.test_attacks import (  # noqa: F401 (collected here, against this module's attacker)
    ATTACKER,
    run,
    test_code_and_root_are_read_only,
    test_cpu_hog_does_not_stop_other_tenants,
    test_fork_bomb_is_contained,
    test_kernel_surface_is_refused,
    test_memory_bomb_kills_only_its_environment,
    test_no_route_to_host_services,
    test_other_tenants_tmp_and_memory_are_invisible,
    test_pids_are_capped,
    test_setuid_binaries_give_nothing,
    test_tmp_is_capped,
)
from tests.security.test_availability import (  # noqa: F401 (collected here, against this module's attacker)
    test_flooding_its_own_runtime_api_does_not_stall_others_or_grow_the_daemon,
    test_printing_in_a_tight_loop_does_not_stall_the_daemon,
)
from tests.support import (
    ROLE,
    SiloServer,
    create_python_function,
    make_client,
    payload_of,
    python_runtime,
    signed_request,
    zip_files,
)

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="gVisor needs root; CI runs these as root"),
    pytest.mark.skipif(shutil.which("runsc") is None, reason="runsc is not installed (.ci/run installs it)"),
]

# Devices gVisor's own kernel implements in every sandbox; none of them is a host device.
GVISOR_DEVICES = {"full", "tty", "ptmx", "pts", "shm", "fuse", "net"}
JAIL_DEVICES = {"null", "zero", "random", "urandom", "fd", "stdin", "stdout", "stderr"}


def use_gvisor(server: SiloServer, name: str) -> None:
    request = signed_request(
        server.endpoint,
        f"/silo/v1/functions/{name}/settings",
        data=json.dumps({"Sandbox": "gvisor"}).encode(),
        method="PUT",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert json.loads(response.read())["Sandbox"] == "gvisor"


def runsc(server: SiloServer, *args: str) -> str:
    state = server.data_dir / "gvisor" / "state"
    out = subprocess.run(["runsc", f"--root={state}", *args], capture_output=True, text=True, timeout=30)
    return out.stdout


def containers(server: SiloServer) -> set[str]:
    return set(runsc(server, "list", "--quiet").split())


@pytest.fixture(scope="module")
def client(silo_server: SiloServer) -> Any:
    return make_client(silo_server.endpoint, read_timeout=60)


@pytest.fixture(scope="module")
def polite(client: Any) -> str:
    """A neighbour in the default backend, for the availability attacks."""
    name = f"polite-gv-{os.urandom(3).hex()}"
    create_python_function(client, name, "def handler(event, context):\n    return {'ok': True}\n", per_tenant=True)
    client.invoke(FunctionName=name, TenantId="polite")
    return name


@pytest.fixture(scope="module")
def attacker(silo_server: SiloServer) -> str:
    client = make_client(silo_server.endpoint)
    name = f"attacker-gv-{os.urandom(3).hex()}"
    client.create_function(
        FunctionName=name,
        Runtime=python_runtime(),
        Role=ROLE,
        Handler="app.handler",
        Code={"ZipFile": zip_files({"app.py": ATTACKER})},
        TenancyConfig={"TenantIsolationMode": "PER_TENANT"},
        MemorySize=128,
        Timeout=10,
        EphemeralStorage={"Size": 512},
    )
    client.get_waiter("function_active_v2").wait(FunctionName=name)
    use_gvisor(silo_server, name)
    return name


def test_backend_is_gvisor(lambda_client: Any, attacker: str, silo_server: SiloServer) -> None:
    assert "gVisor sandboxes" in silo_server.log()
    out = run(lambda_client, attacker, "kernel-id", "import os; result = os.uname().release")
    # A kernel of its own: gVisor's, not the host's, in a runsc container. (The container may predate
    # the call: a new tenant's first call binds a stem, a sandbox grown ahead.)
    assert out["result"] != os.uname().release, out
    assert containers(silo_server)


def test_processes_outside_are_invisible_and_unreachable(lambda_client: Any, attacker: str) -> None:
    out = run(
        lambda_client,
        attacker,
        "ps",
        """
        import os
        pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
        readable = {p: open(f"/proc/{p}/environ", "rb").read() for p in pids
                    if p != os.getpid() and os.access(f"/proc/{p}/environ", os.R_OK)}
        result = {"pids": pids, "me": os.getpid(), "init": open("/proc/1/cmdline", "rb").read().decode(),
                  "readable": {p: env.decode(errors="replace") for p, env in readable.items()}}
    """,
    )
    result = out["result"]
    # Only the runtime and its init, silo's relay, exist in this kernel.
    assert set(result["pids"]) <= {1, result["me"]}, result
    assert "relay.py" in result["init"], result
    # The relay was started without the function's variables (they reach the runtime on a pipe).
    assert set(result["readable"]) <= {"1"}, result
    for environ in result["readable"].values():
        assert "AWS_LAMBDA_FUNCTION_NAME" not in environ and "_HANDLER" not in environ, result
    killed = run(
        lambda_client,
        attacker,
        "ps",
        f"""
        import os, signal
        try:
            os.kill({os.getpid()}, signal.SIGKILL)
            result = "sent"
        except ProcessLookupError:
            result = "no such process"
    """,
    )
    assert killed["result"] == "no such process"


def test_host_secrets_and_devices_are_absent(lambda_client: Any, attacker: str, silo_server: SiloServer) -> None:
    out = run(
        lambda_client,
        attacker,
        "snoop",
        f"""
        import os
        def ls(p):
            return sorted(os.listdir(p)) if os.path.isdir(p) else []
        result = {{
            "exists": [p for p in ("/etc/shadow", "/root", "/home", "{silo_server.data_dir}", "/work",
                                    "/dev/sda", "/dev/vda", "/dev/mem", "/dev/kmsg", "/run", "/var/lib")
                       if os.path.exists(p)],
            "dev": ls("/dev"), "dev_net": ls("/dev/net"), "dev_shm": ls("/dev/shm"),
            "sys_block": ls("/sys/block"), "sys_net": ls("/sys/class/net"), "sys_cgroup": ls("/sys/fs/cgroup"),
        }}
    """,
    )
    result = out["result"]
    assert result["exists"] == [], out
    assert set(result["dev"]) <= JAIL_DEVICES | GVISOR_DEVICES, out
    assert set(result["dev_net"]) <= {"tun"} and result["dev_shm"] == [], out
    # /sys is gVisor's own: no block device, no network device but loopback, no host cgroups.
    assert result["sys_block"] == [] and result["sys_net"] == ["lo"] and result["sys_cgroup"] == [], out


def test_identity_is_unprivileged_and_unique(lambda_client: Any, attacker: str) -> None:
    ids = {}
    for tenant in ("id-a", "id-b"):
        ids[tenant] = run(
            lambda_client,
            attacker,
            tenant,
            """
            import ctypes, os
            libc = ctypes.CDLL(None, use_errno=True)
            status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
            result = {"uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(), "groups": os.getgroups(),
                      "caps": {k: v.strip() for k, v in status.items() if k.startswith("Cap")},
                      "nnp": libc.prctl(39, 0, 0, 0, 0),  # PR_GET_NO_NEW_PRIVS: gVisor's status lacks the line
                      "seccomp": status["Seccomp"].strip()}
        """,
        )["result"]
    a, b = ids["id-a"], ids["id-b"]
    for r in (a, b):
        assert r["uid"] != 0 and r["euid"] != 0 and r["gid"] != 0
        assert {"CapEff", "CapPrm", "CapBnd"} <= set(r["caps"]), r
        assert set(r["caps"].values()) == {"0000000000000000"}
        assert r["nnp"] == 1
        assert r["seccomp"] == "2", "silo's seccomp filter is installed inside gVisor too"
    assert a["uid"] != b["uid"], "two live environments never share a uid"


def frozen(container: str) -> bool:
    state = Path("/sys/fs/cgroup/freezer") / CGROUP_PARENT / container / "freezer.state"
    return state.read_text().strip() != "THAWED"


def processes_of(server: SiloServer, container: str) -> str:
    """runsc ps of a sandbox, or "" when it does not answer (it was frozen meanwhile: a stem that grew)."""
    state = server.data_dir / "gvisor" / "state"
    try:
        out = subprocess.run(["runsc", f"--root={state}", "ps", container], capture_output=True, text=True, timeout=5)
    except subprocess.TimeoutExpired:
        return ""
    return out.stdout


def test_background_process_dies_with_its_environment(
    lambda_client: Any, attacker: str, silo_server: SiloServer
) -> None:
    marker = f"{1000 + int.from_bytes(os.urandom(2), 'big') % 1000}.123"
    # The call stays busy for a while: between calls an environment is frozen, its Sentry with it, and a
    # frozen sandbox cannot answer runsc ps.
    call = concurrent.futures.ThreadPoolExecutor(1).submit(
        run,
        lambda_client,
        attacker,
        "lingerer",
        f"""
        import subprocess, time
        subprocess.Popen(["/usr/bin/sleep", "{marker}"], start_new_session=True)
        time.sleep(6)
        result = 1
    """,
    )
    # Its processes live in gVisor's kernel, not the host's: ask runsc which new sandbox runs a sleep
    # (runsc ps shows command names only; nothing else in an environment runs sleep).
    lingering: list[str] = []
    deadline = time.monotonic() + 5
    while not lingering and time.monotonic() < deadline:
        time.sleep(0.5)
        lingering = [
            c
            for c in containers(silo_server)
            if not frozen(c)
            and any(line.split()[-1:] == ["sleep"] for line in processes_of(silo_server, c).splitlines())
        ]
    assert len(lingering) == 1, "the background process runs while its environment lives"
    container = lingering[0]
    assert call.result(timeout=30)["result"] == 1
    assert frozen(container), "between calls the environment, its Sentry with it, is frozen"
    lambda_client.update_function_configuration(FunctionName=attacker, Description=os.urandom(4).hex())
    lambda_client.get_waiter("function_updated_v2").wait(FunctionName=attacker)

    def host_processes() -> list[int]:
        found = []
        for pid in (p for p in os.listdir("/proc") if p.isdigit()):
            try:
                if container.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                    found.append(int(pid))
            except OSError:
                pass
        return found

    bundle = silo_server.data_dir / "gvisor" / "envs" / container
    deadline = time.monotonic() + 15
    while (container in containers(silo_server) or host_processes() or bundle.exists()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert container not in containers(silo_server), "retiring the environment removed its sandbox"
    assert host_processes() == [], "no runsc process of the sandbox is left"
    assert not bundle.exists(), "its bundle is gone"
    assert not any((Path("/sys/fs/cgroup") / c / "silo-gvisor" / container).exists() for c in ("memory", "pids"))


def test_counter_sample_per_tenant(lambda_client: Any, silo_server: SiloServer) -> None:
    name = f"counter-gv-{os.urandom(3).hex()}"
    lambda_client.create_function(
        FunctionName=name,
        Runtime=python_runtime(),
        Role=ROLE,
        Handler="app.handler",
        Code={"ZipFile": zip_files({"app.py": COUNTER})},
        TenancyConfig={"TenantIsolationMode": "PER_TENANT"},
    )
    lambda_client.get_waiter("function_active_v2").wait(FunctionName=name)
    use_gvisor(silo_server, name)
    a1, a2, b1 = (payload_of(lambda_client.invoke(FunctionName=name, TenantId=t)) for t in ("a", "a", "b"))
    assert (a1["memory"], a1["file"]) == (1, 1)
    assert (a2["memory"], a2["file"]) == (2, 2) and a2["env"] == a1["env"]
    assert (b1["memory"], b1["file"]) == (1, 1) and b1["env"] != a1["env"] and b1["tenant"] == "b"


def test_unmodified_awslambdaric_in_gvisor(
    lambda_client: Any,
    silo_server: SiloServer,
    awslambdaric_dir: Path,  # noqa: F811 (the fixture imported above)
) -> None:
    app = "def handler(event, context):\n    return {'tenant': context.tenant_id, 'event': event}\n"
    bootstrap = "#!/bin/sh\nexec python3 -m awslambdaric app.handler\n"
    name = f"ric-gv-{os.urandom(3).hex()}"
    lambda_client.create_function(
        FunctionName=name,
        Runtime="provided.al2023",
        Role=ROLE,
        Handler="app.handler",
        Code={"ZipFile": _zip_tree(awslambdaric_dir, {"app.py": (app, 0o644), "bootstrap": (bootstrap, 0o755)})},
        TenancyConfig={"TenantIsolationMode": "PER_TENANT"},
        Timeout=30,
    )
    lambda_client.get_waiter("function_active_v2").wait(FunctionName=name)
    use_gvisor(silo_server, name)
    for tenant in ("green", "green"):
        response = lambda_client.invoke(FunctionName=name, TenantId=tenant, Payload=b'{"n": 1}')
        assert "FunctionError" not in response, payload_of(response)
        assert payload_of(response) == {"tenant": tenant, "event": {"n": 1}}
