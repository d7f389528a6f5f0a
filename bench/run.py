"""silo's benchmark: starts a real `silo serve`, runs the standard scenarios, writes bench/RESULTS.md.

Every figure is reported with the median, p90 and p99 of its samples and beside baselines measured
in the same run, because absolute times on a shared machine drift:
  (a) a bare `python3 -c pass` spawn, (b) a direct in-process call of the same handler, and for the
  Node.js row (c) a bare spawn of the node that serves it, timed to its script's first output.
All calls go through the HTTP API on keep-alive connections, as a client of silo would make them.

    python bench/run.py [--quick] [--out bench/RESULTS.md] [--only auth|node|stems]
"""

from __future__ import annotations

import argparse
import base64
import datetime
import http.client
import io
import json
import multiprocessing
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from silo import sigv4
from silo.cli import credentials
from silo.cli.credentials import Credentials
from silo.runtimes import catalog

HERE = Path(__file__).resolve().parent
HANDLER = """
count = 0
def handler(event, context):
    global count
    count += 1
    return {"n": count}
"""

# The same handler for the Node.js rows.
NODE_HANDLER = """
let count = 0;
exports.handler = async () => {
  count += 1;
  return { n: count };
};
"""


@dataclass
class Figure:
    name: str
    samples: list[float]  # milliseconds
    note: str = ""
    percentiles: tuple[float, float, float, int] | None = None  # p50, p90, p99, count, when measured elsewhere

    def row(self) -> str:
        if self.percentiles is not None:
            p50, p90, p99, count = self.percentiles
            return f"| {self.name} | {p50:.3f} | {p90:.3f} | {p99:.3f} | {count} | {self.note} |"
        s = sorted(self.samples)
        if not s:
            return f"| {self.name} | - | - | - | 0 | {self.note} |"
        p = lambda q: s[min(len(s) - 1, int(q * len(s)))]  # noqa: E731
        return f"| {self.name} | {statistics.median(s):.3f} | {p(0.90):.3f} | {p(0.99):.3f} | {len(s)} | {self.note} |"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A `silo serve` with authentication on (the default), or off with `--auth none` among `args`; its
    administrator key (the credentials file it writes) signs the benchmark's calls."""

    def __init__(self, data_dir: Path, *args: str) -> None:
        self.port = free_port()
        self.data_dir = data_dir
        self.credentials: Credentials | None = None
        self.log = open(data_dir.parent / "bench-serve.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "silo", "serve", "--port", str(self.port), "--data-dir", str(data_dir), *args],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    found = credentials.read(data_dir / credentials.FILE_NAME, credentials.PROFILE)
                    if found is not None:
                        self.credentials = Credentials(*found, "us-east-1", "the benchmark server")
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("silo serve did not start")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def signed(
    creds: Credentials | None, port: int, method: str, path: str, body: bytes, headers: dict[str, str]
) -> dict[str, str]:
    """`headers` with the SigV4 headers of `creds` (silo's signer, the CLI's), or as they are without."""
    host = f"127.0.0.1:{port}"
    if creds is None:
        return headers
    raw_path, _, raw_query = path.partition("?")
    added = sigv4.sign_headers(
        access_key=creds.access_key,
        secret=creds.secret,
        method=method,
        host=host,
        raw_path=raw_path,
        raw_query=raw_query,
        headers=headers,
        body=body,
        region=creds.region,
    )
    return {"Host": host, **headers, **added}


class Client:
    """One keep-alive connection to silo's API, signing with `creds` (None: the server runs --auth none)."""

    def __init__(self, port: int, creds: Credentials | None = None) -> None:
        self.port = port
        self.creds = creds
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)

    def call(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, bytes, dict[str, str]]:
        headers = signed(self.creds, self.port, method, path, body, headers or {})
        try:
            self.conn.request(method, path, body=body, headers=headers or {})
        except (BrokenPipeError, ConnectionResetError):
            # The server closed an idle keep-alive connection; nothing of this request reached it.
            self.conn.close()
            self.conn.request(method, path, body=body, headers=headers or {})
        resp = self.conn.getresponse()
        data = resp.read()
        return resp.status, data, {k.lower(): v for k, v in resp.getheaders()}

    def invoke(self, function: str, tenant: str | None) -> float:
        headers = {"X-Amz-Tenant-Id": tenant} if tenant else {}
        t0 = time.perf_counter()
        status, data, _ = self.call("POST", f"/2015-03-31/functions/{function}/invocations", b"{}", headers)
        took = (time.perf_counter() - t0) * 1000
        if status != 200:
            raise RuntimeError(f"invoke failed: {status} {data[:300]!r}")
        return took


def code_zip() -> str:
    return code_zip_of(HANDLER)


def code_zip_of(source: str, name: str = "app.py") -> str:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(name, source)
    return base64.b64encode(buf.getvalue()).decode()


# bench/soak.py writes its section of RESULTS.md between these; a run of this benchmark keeps it.
SOAK_BEGIN = "<!-- soak: written by bench/soak.py -->"
SOAK_END = "<!-- end of soak -->"


def with_soak_section(text: str, previous: str) -> str:
    """`text` with the soak section of `previous`, if it has one, at its end."""
    if SOAK_BEGIN in previous and SOAK_END in previous:
        start = previous.index(SOAK_BEGIN)
        text = text.rstrip("\n") + "\n\n" + previous[start : previous.index(SOAK_END) + len(SOAK_END)] + "\n"
    return text


def create_function(
    client: Client, name: str, per_tenant: bool = True, memory: int = 128, runtime: str | None = None
) -> None:
    """The benchmark's handler in Python (the interpreter running this), or in Node.js given a `nodejs*` runtime."""
    node = runtime is not None and catalog.is_node(runtime)
    doc: dict[str, Any] = {
        "FunctionName": name,
        "Runtime": runtime or f"python3.{sys.version_info.minor}",
        "Handler": "index.handler" if node else "app.handler",
        "Role": "arn:aws:iam::000000000000:role/bench",
        "Code": {"ZipFile": code_zip_of(NODE_HANDLER, "index.js") if node else code_zip()},
        "MemorySize": memory,
    }
    if per_tenant:
        doc["TenancyConfig"] = {"TenantIsolationMode": "PER_TENANT"}
    status, data, _ = client.call(
        "POST", "/2015-03-31/functions", json.dumps(doc).encode(), {"Content-Type": "application/json"}
    )
    if status != 201:
        raise RuntimeError(f"create failed: {status} {data!r}")


# Baselines.
def baseline_spawn(n: int) -> Figure:
    samples = []
    # The real interpreter, not a wrapper script that finds it: the same one silo's environments run.
    python3 = os.path.realpath(sys.executable)
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run([python3, "-c", "pass"], check=True)
        samples.append((time.perf_counter() - t0) * 1000)
    # The interpreter's name and version, not where this machine keeps it.
    name = f"{Path(python3).name} {platform.python_version()}"
    return Figure("baseline (a): bare `python3 -c pass` spawn", samples, name)


def baseline_node_spawn(n: int, node: catalog.Interpreter) -> Figure:
    samples = []
    exe = os.path.realpath(node.executable)
    for _ in range(n):
        # Until node runs the script's first line, not until it has exited: V8's teardown is no part of
        # what a call waits for, and timing it would flatter the jailed start beside it.
        # As silo starts it: its flags, and an environment of its own (this host's NODE_EXTRA_CA_CERTS alone
        # makes node read and parse a CA bundle at every start).
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [exe, *catalog.node_flags(128), "-e", "process.stdout.write('.')"],
            stdout=subprocess.PIPE,
            env={"PATH": "/usr/bin:/bin"},
        )
        assert proc.stdout is not None and proc.stdout.read(1) == b"."
        samples.append((time.perf_counter() - t0) * 1000)
        proc.wait()
    return Figure(
        "baseline (c): bare `node` spawn with silo's flags and a clean environment, to its script's first output",
        samples,
        Path(exe).name,
    )


def baseline_call(n: int) -> Figure:
    scope: dict[str, Any] = {}
    exec(compile(HANDLER, "app.py", "exec"), scope)
    handler = scope["handler"]
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        handler({}, None)
        samples.append((time.perf_counter() - t0) * 1000)
    return Figure("baseline (b): direct in-process call of the handler", samples)


# Scenarios.
def new_tenant_first_call(client: Client, function: str, n: int, prefix: str) -> list[float]:
    return [client.invoke(function, f"{prefix}-{i}") for i in range(n)]


STEM_PACE_S = 0.4


def new_tenant_with_stem(client: Client, function: str, n: int) -> tuple[list[float], list[float]]:
    """New tenants arriving slowly enough that a stem has grown back between them; interleaved with
    warm calls of one tenant at the same pace, since a call after a pause costs more than one of a
    back-to-back stream (caches and the scheduler have gone cold) whatever environment serves it."""
    stems, warm = [], []
    client.invoke(function, "paced-warm")
    for i in range(n):
        time.sleep(STEM_PACE_S)
        stems.append(client.invoke(function, f"stem-{i}"))
        time.sleep(STEM_PACE_S)
        warm.append(client.invoke(function, "paced-warm"))
    return stems, warm


def node_start(work: Path, n: int, lifted: tuple[str, ...]) -> list[Figure]:
    """A new tenant's first call of a Node.js function, with no stem: node is never forked from a template,
    so every such call starts a fresh node (in a jail forked from the exec template, as custom runtimes
    are), beside a bare spawn of the same node measured right before. Nothing when the host has no node
    that silo serves."""
    node = catalog.node_interpreter()
    if node is None:
        return []
    baseline = baseline_node_spawn(n, node)
    server = Server(work / "node", *lifted, "--stems-per-function", "0")
    try:
        client = Client(server.port, server.credentials)
        create_function(client, "bench-node", runtime=node.runtime)
        client.invoke("bench-node", "first")  # starts the exec template, off the measured calls
        time.sleep(2)
        samples = new_tenant_first_call(client, "bench-node", n, "node")
    finally:
        server.stop()
    return [
        baseline,
        Figure(
            f"new tenant, first call, {node.runtime}, no stem: a fresh node (full jail)",
            samples,
            "jail forked from the exec template, then node started; compare with baseline (c)",
        ),
    ]


def warm_call(client: Client, function: str, n: int) -> list[float]:
    client.invoke(function, "warm")
    return [client.invoke(function, "warm") for _ in range(n)]


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def busy_seconds() -> float:
    """CPU time the whole host has spent busy so far (every core, user and system)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    idle = int(fields[3]) + int(fields[4])
    return (sum(int(f) for f in fields[:8]) - idle) / CLOCK_TICKS


def process_seconds(pid: int) -> float:
    """CPU time of one process so far (user and system), 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def damon_pids() -> list[int]:
    """The kernel's DAMON monitor threads, when the host runs one (silo does not start them)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if (proc / "comm").read_text().startswith("kdamond"):
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids


def wait_quiet(timeout_s: float = 30.0, busy_share: float = 0.15) -> float:
    """Wait until the host is nearly idle (under `busy_share` of its cores busy over a second): what warming
    left running (stems growing back, spare cgroups, log writes, the kernel settling) is not measured as
    the scenario's. Returns the seconds waited."""
    cores = os.cpu_count() or 1
    t0 = time.monotonic()
    last = busy_seconds()
    while time.monotonic() - t0 < timeout_s:
        time.sleep(1)
        now = busy_seconds()
        if now - last < busy_share * cores:
            break
        last = now
    return time.monotonic() - t0


@dataclass
class CpuSplit:
    """Where the host's CPU went during a run, per call, in microseconds."""

    daemon: float
    damon: float
    rest: float  # environments, the load generator, the kernel's own work

    def note(self) -> str:
        damon = f", the host's DAMON monitor {self.damon:.0f}" if self.damon >= 0.5 else ""
        total = self.daemon + self.damon + self.rest
        return f"CPU per call {total:.0f} µs: daemon {self.daemon:.0f}{damon}, rest {self.rest:.0f}"


class CpuMeter:
    def __init__(self, daemon_pid: int) -> None:
        self.daemon_pid = daemon_pid
        self.damon = damon_pids()
        self.start = self._read()

    def _read(self) -> tuple[float, float, float]:
        return busy_seconds(), process_seconds(self.daemon_pid), sum(process_seconds(p) for p in self.damon)

    def split(self, calls: int) -> CpuSplit:
        end = self._read()
        busy, daemon, damon = (b - a for a, b in zip(self.start, end, strict=True))
        per = 1e6 / max(calls, 1)
        return CpuSplit(daemon * per, damon * per, max(busy - daemon - damon, 0.0) * per)


def signed_requests(port: int, function: str, tenants: int, prefix: str, creds: Credentials) -> Path:
    """A file of one whole Invoke request per tenant, each signed now (valid five minutes), for tenants.lua:
    wrk's Lua has no HMAC, so the benchmark signs ahead and the server verifies every call as it comes."""
    path = f"/2015-03-31/functions/{function}/invocations"
    out = []
    for n in range(tenants):
        headers = {"X-Amz-Tenant-Id": f"{prefix}-{n}", "Content-Type": "application/json"}
        fields = signed(creds, port, "POST", path, b"{}", {**headers, "Content-Length": "2"})
        head = "".join(f"{name}: {value}\r\n" for name, value in fields.items())
        out.append(f"POST {path} HTTP/1.1\r\n{head}\r\n{{}}")
    file = Path(tempfile.mkstemp(prefix="silo-bench-requests-")[1])
    file.write_text("\n\0\n".join(out))
    return file


def run_wrk(
    port: int, function: str, tenants: int, connections: int, seconds: float, creds: Credentials | None = None
) -> dict[str, Any]:
    """One run of `wrk` calling round the tenants `tp<tenants>-0...`; what tenants.lua reports. With `creds`
    every call is signed (requests made ahead by `signed_requests`)."""
    env = dict(os.environ, SILO_FUNCTION=function, SILO_TENANTS=str(tenants), SILO_PREFIX=f"tp{tenants}")
    requests_file = None
    if creds is not None:
        requests_file = signed_requests(port, function, tenants, f"tp{tenants}", creds)
        env["SILO_REQUESTS"] = str(requests_file)
    try:
        return _wrk(port, connections, seconds, env)
    finally:
        if requests_file is not None:
            requests_file.unlink()


def _wrk(port: int, connections: int, seconds: float, env: dict[str, str]) -> dict[str, Any]:
    out = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{connections}",
            f"-d{seconds:.0f}s",
            "-s",
            str(HERE / "tenants.lua"),
            f"http://127.0.0.1:{port}",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result: dict[str, Any] = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])
    return result


def sustained_wrk(
    port: int,
    function: str,
    tenants: int,
    connections: int,
    seconds: float,
    daemon_pid: int,
    creds: Credentials | None = None,
    label: str = "",
) -> tuple[Figure, float, str]:
    """`wrk` (C, keep-alive) calls round the tenants from `connections` connections for `seconds`: the load
    generator itself costs little of the two cores the server shares with it. Tenants are warmed first
    by 4 parallel clients; those that do not fit (memory budget) are started again when called. The
    calls start once the host has settled after warming."""
    t0 = time.perf_counter()
    warm_tenants(port, function, [f"tp{tenants}-{i}" for i in range(tenants)], creds)
    warm_s = time.perf_counter() - t0
    wait_quiet()
    meter = CpuMeter(daemon_pid)
    result = run_wrk(port, function, tenants, connections, seconds, creds)
    cpu = meter.split(result["requests"])
    rate = result["requests"] / result["seconds"]
    errors = sum(v for k, v in result.items() if k.endswith(("_errors", "timeouts")))
    figure = Figure(
        f"warm calls over {tenants} tenants, wrk with {connections} connections{label}",
        [],
        f"{rate:.0f} calls/s, {result['requests']} calls over {result['seconds']:.0f} s, {errors} errors; "
        + cpu.note(),
        percentiles=(result["p50_us"] / 1000, result["p90_us"] / 1000, result["p99_us"] / 1000, result["requests"]),
    )
    return figure, rate, f"{tenants} tenants warmed in {warm_s:.0f} s"


def auth_overhead(
    work: Path, args: tuple[str, ...], tenants: int, connections: int, seconds: float, rounds: int = 2
) -> tuple[list[Figure], str]:
    """Warm calls over `tenants` tenants on two servers alike but for authentication: one verifying SigV4 on
    every call (the default; every request signed ahead, each tenant's its own), one run with --auth none
    and sent the same calls unsigned. Both live at once and are measured in turn, `rounds` times each, so
    what drifts on a shared host touches both alike; the note compares the medians."""
    signed = Server(work / "auth-sigv4", *args)
    plain = Server(work / "auth-none", *args, "--auth", "none")
    figures: list[Figure] = []
    rates: dict[str, list[float]] = {"sigv4": [], "none": []}
    try:
        for server in (signed, plain):
            create_function(Client(server.port, server.credentials), f"tp{tenants}")
        for _ in range(rounds):
            for name, server in (("sigv4", signed), ("none", plain)):
                assert server.proc is not None
                figure, rate, _ = sustained_wrk(
                    server.port,
                    f"tp{tenants}",
                    tenants,
                    connections,
                    seconds,
                    server.proc.pid,
                    server.credentials,
                    label=", SigV4 verified on every call" if name == "sigv4" else ", --auth none (same run)",
                )
                figures.append(figure)
                rates[name].append(rate)
    finally:
        signed.stop()
        plain.stop()
    on, off = statistics.median(rates["sigv4"]), statistics.median(rates["none"])
    note = (
        f"Authentication's cost: warm calls over {tenants} tenants from {connections} connections, {on:.0f} calls/s "
        f"with every call's SigV4 signature verified against {off:.0f} with --auth none, two servers measured in "
        f"turn ({rounds} runs each, medians): {(on / off - 1) * 100:+.1f}%."
    )
    return figures, note


def warm_tenants(port: int, function: str, names: list[str], creds: Credentials | None = None) -> None:
    """One call per tenant, from 4 client processes."""
    ctx = multiprocessing.get_context("fork")
    queue: Any = ctx.Queue()
    warmers = [ctx.Process(target=_warm_worker, args=(port, function, names[i::4], queue, creds)) for i in range(4)]
    for p in warmers:
        p.start()
    for _ in warmers:
        queue.get()
    for p in warmers:
        p.join()


def metric(port: int, family: str, **labels: str) -> float:
    """The sum of silo's /metrics samples of `family` with these labels."""
    _, body, _ = Client(port).call("GET", "/metrics")
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith(family + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def settled_mem_available_mib(timeout_s: float = 60) -> float:
    """Available memory once it stops rising: what a stopped server's environments held is freed lazily
    (namespaces, cgroups), and a figure taken earlier would count that as this scenario's."""
    last = mem_available_mib()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        time.sleep(1)
        now = mem_available_mib()
        if now - last < 16:
            return now
        last = now
    return last


def mem_available_mib() -> float:
    return meminfo_mib()["MemAvailable"]


def meminfo_mib() -> dict[str, float]:
    fields = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        name, _, value = line.partition(":")
        fields[name] = int(value.split()[0]) / 1024
    return fields


def memory_kinds(before: dict[str, float], after: dict[str, float], count: float) -> str:
    """How the memory the host lost is made up, per environment: the processes' own pages and the
    kernel's objects (namespaces, cgroups, sockets: slab), page tables and kernel stacks."""
    per = 1024 / max(count, 1)
    kinds = [("anonymous", "AnonPages"), ("kernel slab", "Slab"), ("page tables", "PageTables")]
    parts = [f"{name} {(after[key] - before[key]) * per:.0f} KiB" for name, key in kinds]
    return "per environment " + ", ".join(parts)


def _warm_worker(port: int, function: str, tenants: list[str], out: Any, creds: Credentials | None) -> None:
    client = Client(port, creds)
    for t in tenants:
        client.invoke(function, t)
    out.put(True)


def idle_memory() -> tuple[int, float]:
    """Live environments and the memory they hold, from their cgroups (what the kernel charges them)."""
    root = Path("/sys/fs/cgroup/memory/silo")
    envs = [e for d in root.iterdir() if d.is_dir() for e in d.iterdir() if e.is_dir()] if root.is_dir() else []
    total = 0
    for env in envs:
        try:
            stat = dict(line.split() for line in (env / "memory.stat").read_text().splitlines())
            total += int(stat["rss"]) + int(stat.get("mapped_file", 0)) + int(stat.get("shmem", 0))
        except (OSError, KeyError, ValueError):
            pass
    return len(envs), total / (1024 * 1024)


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, Linux {platform.release()}, Python {platform.python_version()}"
    )


AUTH_BEGIN = "<!-- auth: written by bench/run.py --only auth -->"
AUTH_END = "<!-- end of auth -->"


def only_auth(out: Path, quick: bool) -> int:
    """The authentication scenario alone, in a section of its own at the end of `out` (replacing an older one)."""
    if shutil.which("wrk") is None:
        raise SystemExit("bench: wrk is needed for the throughput scenarios (Debian: apt-get install wrk)")
    work = Path(tempfile.mkdtemp(prefix="silo-bench-"))
    try:
        many = ("--keep-alive-s", "3600", "--account-concurrency", "5000")
        figures, note = auth_overhead(work, many, 100 if quick else 1000, 8, 3.0 if quick else 10.0)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    section = [
        AUTH_BEGIN,
        "## Authentication",
        "",
        f"Measured {datetime.date.today().isoformat()} on {machine()} by `bench/run.py --only auth`"
        f"{' --quick' if quick else ''}: the same calls on two servers alike but for authentication, in turn.",
        "",
        "| what | p50 | p90 | p99 | samples | note |",
        "| --- | --- | --- | --- | --- | --- |",
        *(f.row() for f in figures),
        "",
        note,
        AUTH_END,
    ]
    write_section(out, AUTH_BEGIN, AUTH_END, section)
    return 0


def write_section(out: Path, begin: str, end: str, section: list[str]) -> None:
    """`section` (its first line `begin`, its last `end`) at the end of `out`, replacing an older one."""
    previous = out.read_text() if out.exists() else ""
    if begin in previous and end in previous:
        before, after = previous[: previous.index(begin)], previous[previous.index(end) + len(end) :]
        previous = before.rstrip("\n") + "\n" + after.lstrip("\n")
    out.write_text(previous.rstrip("\n") + "\n\n" + "\n".join(section) + "\n")
    print("\n".join(section))


NODE_BEGIN = "<!-- node: written by bench/run.py --only node -->"
NODE_END = "<!-- end of node -->"


def only_node(out: Path, quick: bool) -> int:
    """The Node.js start alone, in a section of its own at the end of `out` (replacing an older one)."""
    work = Path(tempfile.mkdtemp(prefix="silo-bench-"))
    try:
        figures = node_start(work, 50 if quick else 200, ("--memory-budget-mb", "10000000", "--keep-alive-s", "3600"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if not figures:
        raise SystemExit(f"bench: no node on PATH serves a runtime silo has ({', '.join(catalog.NODE_RUNTIMES)})")
    section = [
        NODE_BEGIN,
        "## Node.js start",
        "",
        f"Measured {datetime.date.today().isoformat()} on {machine()} by `bench/run.py --only node`"
        f"{' --quick' if quick else ''}.",
        "",
        "| what | p50 | p90 | p99 | samples | note |",
        "| --- | --- | --- | --- | --- | --- |",
        *(f.row() for f in figures),
        NODE_END,
    ]
    write_section(out, NODE_BEGIN, NODE_END, section)
    return 0


STEMS_BEGIN = "<!-- stems: written by bench/run.py --only stems -->"
STEMS_END = "<!-- end of stems -->"


def only_stems(out: Path, quick: bool) -> int:
    """The new tenants of twenty functions alone (bench/new_tenants.py), in a section of its own at the end
    of `out` (replacing an older one)."""
    import new_tenants

    work = Path(tempfile.mkdtemp(prefix="silo-bench-"))
    try:
        figures, notes = new_tenants.scenario(work, quick)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    section = [
        STEMS_BEGIN,
        "## New tenants of every function",
        "",
        f"Measured {datetime.date.today().isoformat()} on {machine()} by `bench/run.py --only stems`"
        f"{' --quick' if quick else ''}.",
        "",
        "| what | p50 | p90 | p99 | samples | note |",
        "| --- | --- | --- | --- | --- | --- |",
        *(f.row() for f in figures),
        "",
        *notes,
        STEMS_END,
    ]
    write_section(out, STEMS_BEGIN, STEMS_END, section)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer samples and tenants, for a smoke run")
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument(
        "--only",
        choices=["auth", "node", "stems"],
        help="run one scenario (auth: warm calls over 1,000 tenants with and without authentication; node: a new "
        "tenant's first call of a Node.js function beside a bare node spawn; stems: new tenants of twenty "
        "functions of 128 MB-2 GB, each first call beside a warm call at the same pacing) and write its own "
        "section of RESULTS.md, keeping the rest",
    )
    args = parser.parse_args()
    if args.only == "auth":
        return only_auth(args.out, quick=args.quick)
    if args.only == "node":
        return only_node(args.out, quick=args.quick)
    if args.only == "stems":
        return only_stems(args.out, quick=args.quick)
    n = 50 if args.quick else 200
    tenant_counts = (10, 100, 1000) if args.quick else (10, 1000, 3000, 10000)
    density_target = 300 if args.quick else 4000
    seconds = 3.0 if args.quick else 10.0
    connections = 8
    if shutil.which("wrk") is None:
        raise SystemExit("bench: wrk is needed for the throughput scenarios (Debian: apt-get install wrk)")

    figures: list[Figure] = [baseline_spawn(n), baseline_call(n)]
    notes: list[str] = []
    work = Path(tempfile.mkdtemp(prefix="silo-bench-"))
    # The host memory budget is lifted past what the scenarios before the last need; the many-tenant
    # scenarios run under silo's default budget (three quarters of the host), with idle environments
    # counted at what they hold, so the host itself is never overcommitted. 5,000 units of concurrency
    # allow 12,500 tenant environments (2.5 per unit, as on Lambda).
    lifted = ("--memory-budget-mb", "10000000", "--keep-alive-s", "3600")
    host_mib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    many = ("--keep-alive-s", "3600", "--account-concurrency", "5000")
    try:
        server = Server(work / "full", *lifted, "--stems-per-function", "0", "--template-max-forks", "0")
        try:
            client = Client(server.port, server.credentials)
            create_function(client, "bench")
            figures.append(
                Figure(
                    "new tenant, first call, no stem, no template (full start, full jail)",
                    new_tenant_first_call(client, "bench", n, "cold"),
                )
            )
        finally:
            server.stop()
        server = Server(work / "fork", *lifted, "--stems-per-function", "0")
        try:
            client = Client(server.port, server.credentials)
            create_function(client, "bench")
            client.invoke("bench", "first")  # the function's first call starts its runtime's template
            time.sleep(2)
            forks_before = metric(server.port, "silo_cold_starts_total", kind="fork")
            samples = new_tenant_first_call(client, "bench", n, "fork")
            forks = metric(server.port, "silo_cold_starts_total", kind="fork") - forks_before
            figures.append(
                Figure(
                    "new tenant, first call, no stem: fork from the template (full jail)",
                    samples,
                    f"{forks:.0f} of {n} calls forked",
                )
            )
        finally:
            server.stop()
        figures.extend(node_start(work, n, lifted))
        server = Server(work / "data", *lifted)
        try:
            client = Client(server.port, server.credentials)
            create_function(client, "bench")
            client.invoke("bench", "seed")  # the function's first new tenant starts its stem pool
            stems, paced = new_tenant_with_stem(client, "bench", n)
            figures.append(
                Figure(
                    "new tenant, first call, stem ready (full jail)",
                    stems,
                    f"{STEM_PACE_S:.1f} s after the previous call",
                )
            )
            figures.append(
                Figure(
                    "warm call, same tenant, paced like the stem calls",
                    paced,
                    f"{STEM_PACE_S:.1f} s after the previous call",
                )
            )
            figures.append(Figure("warm call, same tenant, back to back", warm_call(client, "bench", max(n, 1000))))
        finally:
            server.stop()
        import new_tenants

        stem_figures, stem_notes = new_tenants.scenario(work, args.quick)
        figures.extend(stem_figures)
        notes.extend(stem_notes)
        rates: dict[int, float] = {}
        for count in tenant_counts:
            # A server of its own per tenant count, so each starts with no environment of the others.
            server = Server(work / f"tp{count}", *many)
            try:
                create_function(Client(server.port, server.credentials), f"tp{count}")
                before = settled_mem_available_mib()
                figure, rate, warmed = sustained_wrk(
                    server.port, f"tp{count}", count, connections, seconds, server.proc.pid, server.credentials
                )
                held = before - mem_available_mib()
                live = metric(server.port, "silo_environments")
                cold = metric(server.port, "silo_cold_starts_total")
                figure.note += f"; {warmed}, {live:.0f} environments live, {cold:.0f} cold starts in all"
                figures.append(figure)
                rates[count] = rate
                if count == 1000:
                    # The same tenants from half the connections: two cores are as busy, and calls queue less.
                    fewer, _, _ = sustained_wrk(
                        server.port, f"tp{count}", count, connections // 2, seconds, server.proc.pid, server.credentials
                    )
                    figures.append(fewer)
                if count >= 1000:
                    envs, mib = idle_memory()
                    notes.append(
                        f"With {count} tenants: {live:.0f} environments live; the host's available memory fell "
                        f"by {held:.0f} MiB ({held / max(live, 1):.1f} MiB per environment, everything counted: "
                        f"processes, page tables, namespaces, the daemon's share), of which their cgroups are "
                        f"charged {mib / max(envs, 1):.1f} MiB each. At that cost "
                        f"{24 * 1024 / (held / max(live, 1)):.0f} environments fit in 24 GiB."
                    )
            finally:
                server.stop()
        auth_figures, auth_note = auth_overhead(work, many, 100 if args.quick else 1000, connections, seconds)
        figures.extend(auth_figures)
        notes.append(auth_note)
        # Density: idle tenant environments live at once. The budget is seven eighths of the host (silo's
        # default is three quarters): what is left is the operating system's, the services' and the daemon's.
        server = Server(
            work / "density",
            "--memory-budget-mb",
            str(host_mib * 7 // 8),
            "--keep-alive-s",
            "3600",
            "--account-concurrency",
            "5000",
        )
        try:
            create_function(Client(server.port, server.credentials), "density")
            before = settled_mem_available_mib()
            kinds_before = meminfo_mib()
            t0 = time.perf_counter()
            warm_tenants(server.port, "density", [f"d-{i}" for i in range(density_target)], server.credentials)
            took = time.perf_counter() - t0
            time.sleep(2)
            kinds_after = meminfo_mib()
            held = before - kinds_after["MemAvailable"]
            live = metric(server.port, "silo_environments")
            evicted = metric(server.port, "silo_cold_starts_total") - live
            envs, mib = idle_memory()
            notes.append(
                f"Density: {density_target} tenants called once each (in {took:.0f} s, 4 clients), under a memory "
                f"budget of {host_mib * 7 // 8} MiB: {live:.0f} environments live at once, {max(evicted, 0):.0f} "
                "evicted; "
                f"the host's available memory fell by {held:.0f} MiB ({held / max(live, 1):.2f} MiB each, "
                f"about {1024 / (held / max(live, 1)):.0f} per GiB, {24 * 1024 / (held / max(live, 1)):.0f} "
                f"in 24 GiB); their cgroups are charged {mib / max(envs, 1):.2f} MiB each; "
                f"{memory_kinds(kinds_before, kinds_after, live)}."
            )
        finally:
            server.stop()
        low = min(rates)
        for count in sorted(rates):
            if count != low:
                notes.append(
                    f"Throughput over {count} tenants vs {low} tenants: {rates[count]:.0f} vs {rates[low]:.0f} "
                    f"calls/s ({(rates[count] / rates[low] - 1) * 100:+.0f}%)."
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)

    today = datetime.date.today().isoformat()
    lines = [
        "# Benchmark results",
        "",
        f"Measured {today} on {machine()} by `make bench` (bench/run.py{' --quick' if args.quick else ''}).",
        "Times in milliseconds; every call goes through the HTTP API on a keep-alive connection, and every",
        "environment runs in the full jail. Baselines (a), (b) and (c) are measured in the same run.",
        "",
        "| what | p50 | p90 | p99 | samples | note |",
        "| --- | --- | --- | --- | --- | --- |",
        *(f.row() for f in figures),
        "",
        *notes,
        "",
    ]
    previous = args.out.read_text() if args.out.exists() else ""
    args.out.write_text(with_soak_section("\n".join(lines), previous))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
