"""The runtimes silo serves and how an environment of each one is started.

`python3.x` runtimes are served by the Python interpreters present on the host: found on PATH, or
under pyenv's versions directory. `nodejs20.x` or `nodejs22.x` is served by the `node` on PATH,
whichever its major version is (one host serves one of them), with silo's built-in Node.js runtime.
`provided.al2023` and `provided.al2` run the function's own executable `bootstrap`, as on Lambda.
Stdlib only: the daemon, the CLI and tests all read this.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

PYTHON_RUNTIMES = tuple(f"python3.{minor}" for minor in range(8, 15))
# The Node.js runtimes silo's built-in runtime implements (callbacks included, which nodejs24.x drops).
NODE_RUNTIMES = ("nodejs20.x", "nodejs22.x")
CUSTOM_RUNTIMES = ("provided.al2023", "provided.al2")
# Every runtime name Lambda knows, so that a known-but-absent one gets a different message from a typo.
LAMBDA_RUNTIMES = (
    *PYTHON_RUNTIMES,
    *CUSTOM_RUNTIMES,
    "provided",
    "nodejs18.x", "nodejs20.x", "nodejs22.x", "nodejs24.x",
    "java8.al2", "java11", "java17", "java21", "java25",
    "dotnet8", "dotnet10",
    "ruby3.2", "ruby3.3", "ruby3.4",
)  # fmt: skip

BUILTIN_PYTHON_BOOTSTRAP = Path(__file__).resolve().parent / "python" / "bootstrap.py"
BUILTIN_NODE_ENTRY = Path(__file__).resolve().parent / "node" / "index.js"

_PROBE = "import sys; print(sys.executable); print(sys.prefix); print('%d.%d' % sys.version_info[:2])"


@dataclass(frozen=True, slots=True)
class Interpreter:
    runtime: str
    executable: Path
    prefix: Path


def _candidate_dirs() -> list[Path]:
    dirs = [Path(p) for p in os.environ.get("PATH", "").split(os.pathsep) if p]
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    versions = pyenv_root / "versions"
    if versions.is_dir():
        dirs.extend(sorted(v / "bin" for v in versions.iterdir()))
    return dirs


def _probe(path: Path, runtime: str) -> Interpreter | None:
    try:
        out = subprocess.run([str(path), "-c", _PROBE], capture_output=True, text=True, timeout=15, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = out.stdout.split()
    if out.returncode != 0 or len(lines) != 3 or f"python{lines[2]}" != runtime:
        return None
    return Interpreter(runtime, Path(lines[0]), Path(lines[1]))


@functools.cache
def python_interpreters() -> dict[str, Interpreter]:
    """Every `python3.x` runtime this host can serve, found once and remembered."""
    found: dict[str, Interpreter] = {}
    for runtime in PYTHON_RUNTIMES:
        for directory in _candidate_dirs():
            exe = shutil.which(runtime, path=str(directory))
            if exe is None:
                continue
            interpreter = _probe(Path(exe), runtime)
            if interpreter is not None:
                found[runtime] = interpreter
                break
    return found


_NODE_PROBE = "process.stdout.write(process.execPath + '\\n' + process.versions.node)"


def _probe_node(path: str) -> Interpreter | None:
    try:
        out = subprocess.run([path, "-e", _NODE_PROBE], capture_output=True, text=True, timeout=15, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = out.stdout.split()
    if out.returncode != 0 or len(lines) != 2:
        return None
    runtime = f"nodejs{lines[1].split('.')[0]}.x"
    if runtime not in NODE_RUNTIMES:
        return None
    executable = Path(lines[0])
    # node's own tree (bin/node, lib/node_modules): /usr for Debian's, a directory of its own otherwise.
    return Interpreter(runtime, executable, executable.parent.parent)


@functools.cache
def node_interpreter() -> Interpreter | None:
    """The Node.js runtime this host serves: the `node` on PATH, when its major version is one silo serves."""
    exe = shutil.which("node")
    return _probe_node(exe) if exe is not None else None


def node_version_note() -> str:
    """What this host has of Node.js, for an error that refuses a Node.js runtime it does not serve."""
    node = node_interpreter()
    if node is not None:
        return f"this host's node serves {node.runtime} only"
    if shutil.which("node") is None:
        return "this host has no node on PATH"
    return f"this host's node is none of the versions silo serves ({', '.join(NODE_RUNTIMES)})"


def available_runtimes() -> list[str]:
    node = node_interpreter()
    return [*python_interpreters(), *([node.runtime] if node is not None else []), *CUSTOM_RUNTIMES]


def is_custom(runtime: str) -> bool:
    return runtime in CUSTOM_RUNTIMES


def is_node(runtime: str) -> bool:
    return runtime in NODE_RUNTIMES


def is_python(runtime: str) -> bool:
    return runtime in PYTHON_RUNTIMES


def interpreter_of(runtime: str) -> Interpreter | None:
    """The host interpreter that runs `runtime`'s environments; None for a custom runtime."""
    if is_node(runtime):
        node = node_interpreter()
        if node is None or node.runtime != runtime:
            raise KeyError(f"{runtime} is not served on this host ({node_version_note()})")
        return node
    if is_custom(runtime):
        return None
    return python_interpreters()[runtime]


def builtin_runtime_dir(runtime: str) -> Path:
    """silo's own runtime of `runtime`, the directory environments see at LAMBDA_RUNTIME_DIR."""
    return (BUILTIN_NODE_ENTRY if is_node(runtime) else BUILTIN_PYTHON_BOOTSTRAP).parent


def node_path(runtime: str, task_root: str) -> str:
    """NODE_PATH as Lambda's nodejs runtimes set it (layers' node_modules, then the code), without the
    runtime's own directory: silo's runtime files must not answer a function's `require` of a missing package."""
    major = runtime.removeprefix("nodejs").removesuffix(".x")
    return f"/opt/nodejs/node{major}/node_modules:/opt/nodejs/node_modules:{task_root}"


def node_flags(memory_mb: int) -> list[str]:
    """V8's heap sized to the function's memory as on Lambda: a tenth for the young generation, the rest old."""
    new_space = memory_mb // 10
    return [
        "--expose-gc",
        "--max-http-header-size=81920",
        f"--max-semi-space-size={max(new_space // 2, 1)}",
        f"--max-old-space-size={memory_mb - new_space}",
    ]


def launch_command(
    runtime: str, task_root: str, runtime_dir: str, interpreter: str | None = None, memory_mb: int = 128
) -> list[str]:
    """The argv that starts the runtime of an environment, as paths look from inside the environment.

    `interpreter` is where the environment sees the runtime's interpreter (default: where the host has it).
    """
    if is_custom(runtime):
        return [f"{task_root}/bootstrap"]
    host = interpreter_of(runtime)
    exe = interpreter or str(host.executable if host is not None else "")
    if is_node(runtime):
        # A plain start: node is never forked from a template (a forked V8 process is not safe to run).
        return [exe, *node_flags(memory_mb), f"{runtime_dir}/{BUILTIN_NODE_ENTRY.name}"]
    # -S: no site module: the host interpreter's site-packages are not the function's (its dependencies
    # come in its code), and processing them costs tens of milliseconds of every cold start.
    # -B: the code is read-only, so writing bytecode would only fail.
    return [exe, "-S", "-B", f"{runtime_dir}/{BUILTIN_PYTHON_BOOTSTRAP.name}"]


def execution_env_name(runtime: str) -> str:
    """`AWS_EXECUTION_ENV` as Lambda sets it, e.g. `AWS_Lambda_python3.12`."""
    return f"AWS_Lambda_{runtime}"


# The variable that tells the runtime of the development backend where the SDK's tree (silo.store.sdk) is
# on the host; jailed environments see it at sdk_path().
SDK_VARIABLE = "SILO_RUNTIME_SDK"


def sdk_path(runtime: str) -> str:
    """Where environments of the Python runtime `runtime` (python3.x) see the SDK: Lambda's site-packages."""
    return f"/var/lang/lib/{runtime}/site-packages"
