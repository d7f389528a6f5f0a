"""Node.js handlers that attack the jail: a Node.js environment is jailed as a Python one is (namespaces,
read-only root, its own uid, no capabilities, seccomp, cgroups), and node is started fresh, never forked.

The attacking function runs whatever JavaScript it is sent, as hostile tenant code would, through the real
server with the default backend (the jail, when run as root).
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from silo.runtimes import catalog
from tests.support import ROLE, SiloServer, make_client, payload_of, zip_files

NODE = catalog.node_interpreter()
pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the jail needs root; CI runs these as root"),
    pytest.mark.skipif(NODE is None, reason="no node of a version silo serves (20, 22) on PATH"),
]

# The event's `code` is the body of an async function of (require, context); what it returns is the answer.
ATTACKER = """
const AsyncFunction = Object.getPrototypeOf(async function () {}).constructor;
exports.handler = async (event, context) => {
  try {
    return { result: await new AsyncFunction('require', 'context', event.code)(require, context) };
  } catch (err) {
    return { raised: err && err.code, error: String(err) };
  }
};
"""


@pytest.fixture(scope="module")
def attacker(silo_server: SiloServer) -> str:
    assert NODE is not None
    client = make_client(silo_server.endpoint)
    name = f"node-attacker-{os.urandom(3).hex()}"
    client.create_function(
        FunctionName=name,
        Runtime=NODE.runtime,
        Role=ROLE,
        Handler="index.handler",
        Code={"ZipFile": zip_files({"index.js": ATTACKER})},
        TenancyConfig={"TenantIsolationMode": "PER_TENANT"},
        MemorySize=128,
        Timeout=10,
    )
    client.get_waiter("function_active_v2").wait(FunctionName=name)
    return name


def run(client: Any, function: str, tenant: str, code: str) -> dict[str, Any]:
    response = client.invoke(FunctionName=function, TenantId=tenant, Payload=json.dumps({"code": code}).encode())
    out: dict[str, Any] = payload_of(response)
    out["_function_error"] = response.get("FunctionError")
    return out


def test_identity_is_unprivileged_and_filtered(lambda_client: Any, attacker: str) -> None:
    out = run(
        lambda_client,
        attacker,
        "node-id",
        """
        const status = Object.fromEntries(require('fs').readFileSync('/proc/self/status', 'utf8').trim().split('\\n')
          .map((line) => line.split(':').map((part) => part.trim())));
        return { uid: process.getuid(), gid: process.getgid(), groups: process.getgroups(),
                 caps: ['CapEff', 'CapPrm', 'CapBnd', 'CapAmb'].map((k) => status[k]),
                 nnp: status.NoNewPrivs, seccomp: status.Seccomp };
        """,
    )["result"]
    assert out["uid"] != 0 and out["gid"] != 0 and 0 not in out["groups"]
    assert set(out["caps"]) == {"0000000000000000"}
    assert out["nnp"] == "1" and out["seccomp"] == "2", "no_new_privs and a seccomp filter"


def test_code_runtime_and_root_are_read_only(lambda_client: Any, attacker: str) -> None:
    out = run(
        lambda_client,
        attacker,
        "node-writer",
        """
        const fs = require('fs');
        const result = {};
        for (const path of ['/var/task/index.js', '/var/task/new.js', '/var/runtime/index.js',
                            '/var/runtime/loop.js', '/usr/bin/evil', '/etc/passwd', '/evil']) {
          try { fs.appendFileSync(path, 'x'); result[path] = 'written'; } catch (err) { result[path] = err.code; }
        }
        return result;
        """,
    )["result"]
    assert "written" not in out.values(), out


def test_kernel_surface_is_refused(lambda_client: Any, attacker: str) -> None:
    out = run(
        lambda_client,
        attacker,
        "node-kernel",
        """
        const { spawnSync } = require('child_process');
        const tried = {};
        for (const [name, argv] of Object.entries({
          mount: ['/usr/bin/mount', '-t', 'tmpfs', 'none', '/tmp'],
          unshare: ['/usr/bin/unshare', '--user', '--map-root-user', '/bin/true'],
        })) {
          const r = spawnSync(argv[0], argv.slice(1), { encoding: 'utf8' });
          tried[name] = { status: r.status, stderr: r.stderr, error: r.error && r.error.code };
        }
        return tried;
        """,
    )["result"]
    assert out["mount"]["status"] not in (0, None), out
    assert out["unshare"]["status"] not in (0, None), out


def test_other_tenants_tmp_memory_and_processes_are_invisible(lambda_client: Any, attacker: str) -> None:
    write = "globalThis.mark = 'secret-a'; require('fs').writeFileSync('/tmp/secret', 'secret-a'); return 1;"
    assert run(lambda_client, attacker, "node-a", write)["result"] == 1
    out = run(
        lambda_client,
        attacker,
        "node-b",
        """
        const fs = require('fs');
        const pids = fs.readdirSync('/proc').filter((name) => /^\\d+$/.test(name));
        return { file: fs.existsSync('/tmp/secret'), mark: globalThis.mark || null,
                 commands: pids.map((pid) => { try { return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8'); }
                                               catch (err) { return ''; } }) };
        """,
    )["result"]
    assert out["file"] is False and out["mark"] is None, "tenant B saw tenant A's environment"
    # Only its own pid namespace: node (pid 1) and nothing of the host, the daemon or tenant A.
    assert out["commands"] and all(c.split("\0")[0].endswith("node") for c in out["commands"] if c), out


def test_no_route_to_the_daemon(lambda_client: Any, attacker: str, silo_server: SiloServer) -> None:
    out = run(
        lambda_client,
        attacker,
        "node-net",
        f"""
        const net = require('net');
        return await new Promise((resolve) => {{
          const socket = net.connect({silo_server.port}, '127.0.0.1');
          socket.on('connect', () => {{ socket.destroy(); resolve('connected'); }});
          socket.on('error', (err) => resolve(err.code));
        }});
        """,
    )["result"]
    assert out in ("ECONNREFUSED", "ENETUNREACH", "EHOSTUNREACH"), out


def test_memory_bomb_kills_only_its_environment(lambda_client: Any, attacker: str) -> None:
    assert run(lambda_client, attacker, "node-bomber", "globalThis.mark = 1; return 1;")["result"] == 1
    assert run(lambda_client, attacker, "node-bystander", "globalThis.mark = 'b'; return 1;")["result"] == 1
    # Off the V8 heap, so the cgroup's limit is what stops it, not node's own heap limit.
    out = run(
        lambda_client, attacker, "node-bomber", "const blocks = []; for (;;) blocks.push(Buffer.alloc(16 << 20, 1));"
    )
    assert out["_function_error"] == "Unhandled"
    assert out.get("errorType") in ("Runtime.OutOfMemory", "Runtime.ExitError"), out
    fresh = run(lambda_client, attacker, "node-bomber", "return globalThis.mark || null;")
    assert fresh["result"] is None, "the next call of that tenant gets a fresh environment"
    still = run(lambda_client, attacker, "node-bystander", "return globalThis.mark;")
    assert still["result"] == "b", "the other tenant's environment was not touched"
