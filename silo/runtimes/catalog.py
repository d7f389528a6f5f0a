"""The runtimes silo serves and how an environment of each one is started.

`python3.x` runtimes are served by the Python interpreters present on the host: found on PATH, or
under pyenv's versions directory. `provided.al2023` and `provided.al2` run the function's own
executable `bootstrap`, as on Lambda. Stdlib only: the daemon, the CLI and tests all read this.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

PYTHON_RUNTIMES = tuple(f"python3.{minor}" for minor in range(8, 15))
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


def available_runtimes() -> list[str]:
    return [*python_interpreters(), *CUSTOM_RUNTIMES]


def is_custom(runtime: str) -> bool:
    return runtime in CUSTOM_RUNTIMES


def launch_command(runtime: str, task_root: str, runtime_dir: str, python: str | None = None) -> list[str]:
    """The argv that starts the runtime of an environment, as paths look from inside the environment.

    `python` is where the environment sees the runtime's interpreter (default: where the host has it).
    """
    if is_custom(runtime):
        return [f"{task_root}/bootstrap"]
    exe = python or str(python_interpreters()[runtime].executable)
    # -S: no site module: the host interpreter's site-packages are not the function's (its dependencies
    # come in its code), and processing them costs tens of milliseconds of every cold start.
    # -B: the code is read-only, so writing bytecode would only fail.
    return [exe, "-S", "-B", f"{runtime_dir}/{BUILTIN_PYTHON_BOOTSTRAP.name}"]


def execution_env_name(runtime: str) -> str:
    """`AWS_EXECUTION_ENV` as Lambda sets it, e.g. `AWS_Lambda_python3.12`."""
    return f"AWS_Lambda_{runtime}"
