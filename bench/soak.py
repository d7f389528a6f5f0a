"""silo's soak: 1,000 polite tenants under sustained calls, once alone and once with hostile tenants among
them, reporting what the daemon and the host hold as it goes and the polite tenants' latency.

Each run serves `wrk` calls round the 1,000 polite tenants from 4 connections for `--minutes`, in
one-minute segments; between segments it samples the daemon's resident memory, descriptors and
threads, the environments' cgroups, the uids environments run as, the host's mounts, the live
environments and the size of the database. In the second run hostile tenants of another function
keep calling it with code that floods its output and its Runtime API (pipelined requests whose
answers it never reads) for 20 s per call, and leaves threads doing both behind when the call ends.
Nothing may grow without bound, and the polite tenants' p99 should stay within twice that of the run
without the hostile ones.

    python bench/soak.py [--minutes 10] [--out bench/RESULTS.md]

Its figures go into their own section at the end of RESULTS.md, which `bench/run.py` keeps.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run as bench  # noqa: E402  (the benchmark's server, client and wrk driver)

TENANTS = 1000
CONNECTIONS = 4
HOSTILE = 4

ATTACKER = """
import json
def handler(event, context):
    scope = {"result": None}
    exec(event["code"], scope)
    return {"result": scope["result"]}
"""

HOSTILE_CODE = """
import os, socket, sys, threading, time
host, port = os.environ["AWS_LAMBDA_RUNTIME_API"].split(":")
request = b"GET /2018-06-01/runtime/invocation/nothing HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n" * 2000
def api_flood(until):
    s = socket.create_connection((host, int(port)))
    s.setblocking(False)
    while time.time() < until:
        try:
            s.send(request)
        except BlockingIOError:
            time.sleep(0.001)
        except OSError:
            return
def log_flood(until):
    line = "x" * 60 + "\\n"
    while time.time() < until:
        sys.stdout.write(line * 100)
forever = time.time() + 86400
if not getattr(sys, "left_behind", False):
    sys.left_behind = True  # threads that go on once the call has ended (its environment is frozen then)
    for target in (api_flood, log_flood):
        threading.Thread(target=target, args=(forever,), daemon=True).start()
until = time.time() + 20
threads = [threading.Thread(target=api_flood, args=(until,)) for _ in range(3)]
threads.append(threading.Thread(target=log_flood, args=(until,)))
for t in threads:
    t.start()
for t in threads:
    t.join()
result = 1
"""


def daemon_sample(server: bench.Server) -> dict[str, float]:
    pid = server.proc.pid
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    groups = 0
    root = Path("/sys/fs/cgroup/memory/silo")
    if root.is_dir():
        groups = sum(1 for parent in root.iterdir() if parent.is_dir() for g in parent.iterdir() if g.is_dir())
    uids = set()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                for line in (proc / "status").read_text().splitlines():
                    if line.startswith("Uid:"):
                        uid = int(line.split()[1])
                        if uid >= 1_000_000:
                            uids.add(uid)
                        break
            except OSError:
                continue
    db = sum(p.stat().st_size for p in server.data_dir.glob("silo.db*"))
    return {
        "daemon MiB": int(status["VmRSS"].split()[0]) / 1024,
        "descriptors": len(os.listdir(f"/proc/{pid}/fd")),
        "threads": int(status["Threads"]),
        "cgroups": groups,
        "uids": len(uids),
        "host mounts": len(Path("/proc/self/mountinfo").read_text().splitlines()),
        "environments": bench.metric(server.port, "silo_environments"),
        "database MiB": db / (1024 * 1024),
    }


class Hostiles:
    """Hostile tenants calling their function back to back, each from a thread of its own."""

    def __init__(self, port: int, function: str, count: int, creds: Any = None) -> None:
        self._stop = threading.Event()
        self.calls = 0
        self.failures = 0
        self._threads = [
            threading.Thread(target=self._run, args=(port, function, f"hostile-{i}", creds), daemon=True)
            for i in range(count)
        ]

    def _run(self, port: int, function: str, tenant: str, creds: Any) -> None:
        client = bench.Client(port, creds)
        body = json.dumps({"code": HOSTILE_CODE}).encode()
        while not self._stop.is_set():
            status, _, _ = client.call(
                "POST", f"/2015-03-31/functions/{function}/invocations", body, {"X-Amz-Tenant-Id": tenant}
            )
            self.calls += 1
            self.failures += status != 200

    def __enter__(self) -> Hostiles:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)


def soak(work: Path, name: str, minutes: int, hostile: bool) -> dict[str, Any]:
    server = bench.Server(work / name, "--keep-alive-s", "3600", "--account-concurrency", "5000")
    try:
        client = bench.Client(server.port, server.credentials)
        bench.create_function(client, "polite")
        status, data, _ = client.call(
            "POST",
            "/2015-03-31/functions",
            json.dumps(
                {
                    "FunctionName": "hostile",
                    "Runtime": f"python3.{sys.version_info.minor}",
                    "Role": "arn:aws:iam::000000000000:role/bench",
                    "Handler": "app.handler",
                    "Code": {"ZipFile": bench.code_zip_of(ATTACKER)},
                    "MemorySize": 128,
                    "Timeout": 60,
                    "TenancyConfig": {"TenantIsolationMode": "PER_TENANT"},
                }
            ).encode(),
        )
        if status != 201:
            raise RuntimeError(f"could not create the hostile function: {status} {data[:300]!r}")
        bench.warm_tenants(server.port, "polite", [f"tp{TENANTS}-{i}" for i in range(TENANTS)], server.credentials)
        bench.wait_quiet()
        samples = [daemon_sample(server)]
        segments: list[dict[str, Any]] = []
        hostiles = Hostiles(server.port, "hostile", HOSTILE if hostile else 0, server.credentials)
        with hostiles:
            for _ in range(minutes):
                segments.append(bench.run_wrk(server.port, "polite", TENANTS, CONNECTIONS, 60, server.credentials))
                samples.append(daemon_sample(server))
        return {
            "samples": samples,
            "segments": segments,
            "hostile_calls": hostiles.calls,
            "failures": hostiles.failures,
        }
    finally:
        server.stop()


def report(quiet: dict[str, Any], loud: dict[str, Any], minutes: int) -> str:
    lines = [
        bench.SOAK_BEGIN,
        "## Soak: 1,000 tenants, with and without hostile tenants among them",
        "",
        f"Run {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC on {bench.machine()}, by `make soak` "
        f"(`bench/soak.py`). {TENANTS} polite tenants of one function called round by `wrk` from "
        f"{CONNECTIONS} connections, {minutes} one-minute segments per run, every environment in the full jail; "
        f"in the second run {HOSTILE} hostile tenants of another function flood their output and their Runtime "
        "API, in calls of 20 s back to back, and leave threads flooding both behind every call.",
        "",
        "### Polite tenants' latency",
        "",
        "| run | calls/s | p50 ms | p99 ms (median of segments) | p99 ms (worst segment) | errors |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    p99s = {}
    for label, run in (("alone", quiet), ("with hostile tenants", loud)):
        segs = run["segments"]
        calls = sum(s["requests"] for s in segs)
        secs = sum(s["seconds"] for s in segs)
        errors = sum(v for s in segs for k, v in s.items() if k.endswith(("_errors", "timeouts")))
        p99 = statistics.median(s["p99_us"] for s in segs) / 1000
        p99s[label] = p99
        lines.append(
            f"| {label} | {calls / secs:.0f} | {statistics.median(s['p50_us'] for s in segs) / 1000:.2f} | "
            f"{p99:.2f} | {max(s['p99_us'] for s in segs) / 1000:.2f} | {errors} |"
        )
    ratio = p99s["with hostile tenants"] / p99s["alone"]
    lines += [
        "",
        f"p99 with the hostile tenants is {ratio:.2f} times the p99 alone (target: within 2). The hostile "
        f"tenants made {loud['hostile_calls']} calls ({loud['failures']} not answered 200).",
        "",
        "### What the daemon and the host hold, sampled after warming and after each segment",
        "",
    ]
    for label, run in (("alone", quiet), ("with hostile tenants", loud)):
        keys = list(run["samples"][0])
        lines += [f"{label}:", "", "| sample | " + " | ".join(keys) + " |", "|" + " --- |" * (len(keys) + 1)]
        for i, sample in enumerate(run["samples"]):
            when = "warmed" if i == 0 else f"after minute {i}"
            lines.append(f"| {when} | " + " | ".join(f"{sample[k]:.0f}" for k in keys) + " |")
        lines.append("")
    lines.append(bench.SOAK_END)
    return "\n".join(lines) + "\n"


def write_section(out: Path, section: str) -> None:
    text = out.read_text() if out.exists() else ""
    if bench.SOAK_BEGIN in text and bench.SOAK_END in text:
        text = text[: text.index(bench.SOAK_BEGIN)].rstrip("\n")
    out.write_text((text + "\n\n" if text else "") + section)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="silo-soak-"))
    quiet = soak(work, "alone", args.minutes, hostile=False)
    bench.settled_mem_available_mib()
    loud = soak(work, "hostile", args.minutes, hostile=True)
    section = report(quiet, loud, args.minutes)
    write_section(args.out, section)
    print(section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
