"""The Node.js runtime below the server: how silo finds the host's node, what it starts, what it refuses,
and the built-in runtime's copy of the Runtime API's paths. Its behaviour inside an environment is driven
with boto3 in tests/compat/test_node.py."""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from silo.control.validation import Rules, create_request
from silo.errors import InvalidParameterValueException
from silo.runtime_api import paths
from silo.runtimes import catalog
from silo.sandbox.base import LaunchSpec
from silo.sandbox.layout import RUNTIME_DIR, TASK_ROOT, runtime_layout
from tests.unit.test_control_validation import ROLE, zip_b64

NODE = shutil.which("node")


@pytest.fixture()
def fresh_catalog() -> Iterator[None]:
    """The host's node is looked up once per process; these tests look again under their own PATH."""
    catalog.node_interpreter.cache_clear()
    yield
    catalog.node_interpreter.cache_clear()


def fake_node(directory: Path, version: str) -> Path:
    """A `node` that answers silo's question as a node of `version` would."""
    directory.mkdir(parents=True, exist_ok=True)
    exe = directory / "node"
    exe.write_text(f"#!/bin/sh\nprintf '%s\\n%s' '{exe}' '{version}'\n")
    exe.chmod(0o755)
    return exe


@pytest.mark.parametrize(("version", "runtime"), [("20.20.2", "nodejs20.x"), ("22.11.0", "nodejs22.x")])
def test_the_hosts_node_serves_the_runtime_of_its_major_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_catalog: None, version: str, runtime: str
) -> None:
    exe = fake_node(tmp_path / "opt" / "node" / "bin", version)
    monkeypatch.setenv("PATH", str(exe.parent))
    found = catalog.node_interpreter()
    assert found is not None and found.runtime == runtime
    assert found.executable == exe and found.prefix == tmp_path / "opt" / "node"
    assert runtime in catalog.available_runtimes()
    assert catalog.interpreter_of(runtime) == found
    other = next(r for r in catalog.NODE_RUNTIMES if r != runtime)
    assert other not in catalog.available_runtimes()
    with pytest.raises(KeyError, match=f"this host's node serves {runtime} only"):
        catalog.interpreter_of(other)


@pytest.mark.parametrize("version", ["18.19.0", "24.1.0", "garbage"])
def test_a_node_of_another_version_serves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_catalog: None, version: str
) -> None:
    monkeypatch.setenv("PATH", str(fake_node(tmp_path / "bin", version).parent))
    assert catalog.node_interpreter() is None
    assert not any(catalog.is_node(r) for r in catalog.available_runtimes())
    assert "none of the versions silo serves" in catalog.node_version_note()


def test_no_node_serves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_catalog: None) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert catalog.node_interpreter() is None
    assert catalog.node_version_note() == "this host has no node on PATH"


def node_request(runtime: str) -> dict[str, object]:
    return {"FunctionName": "fn", "Runtime": runtime, "Role": ROLE, "Handler": "index.handler",
            "Code": {"ZipFile": zip_b64()}}  # fmt: skip


def test_a_function_asking_for_the_other_node_version_is_told_what_this_host_has() -> None:
    rules = Rules(available_runtimes=("python3.11", "nodejs20.x", "provided.al2023"), architecture="x86_64")
    assert create_request(node_request("nodejs20.x"), rules).config["Runtime"] == "nodejs20.x"
    with pytest.raises(InvalidParameterValueException) as refused:
        create_request(node_request("nodejs22.x"), rules)
    assert refused.value.message == (
        "The runtime nodejs22.x is not available on this silo host: this host's node serves nodejs20.x only. "
        "Available runtimes: python3.11, nodejs20.x, provided.al2023."
    )
    without = Rules(available_runtimes=("python3.11",), architecture="x86_64")
    with pytest.raises(InvalidParameterValueException, match="this host has no node of a version silo serves"):
        create_request(node_request("nodejs20.x"), without)


def test_heap_flags_follow_the_functions_memory() -> None:
    assert catalog.node_flags(1024) == [
        "--expose-gc",
        "--max-http-header-size=81920",
        "--max-semi-space-size=51",
        "--max-old-space-size=922",
    ]
    assert catalog.node_flags(128)[-2:] == ["--max-semi-space-size=6", "--max-old-space-size=116"]


@pytest.mark.skipif(catalog.node_interpreter() is None, reason="no node of a version silo serves on PATH")
def test_the_environment_sees_silos_node_runtime_at_var_runtime(tmp_path: Path) -> None:
    node = catalog.node_interpreter()
    assert node is not None
    spec = LaunchSpec("e1", node.runtime, {"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256"}, tmp_path, 256, 512)
    layout = runtime_layout(spec)
    runtime_binds = [b for b in layout.binds if b.target == RUNTIME_DIR]
    assert [b.source for b in runtime_binds] == [str(catalog.BUILTIN_NODE_ENTRY.parent)]
    assert layout.argv[-1] == f"{RUNTIME_DIR}/index.js" and "--max-old-space-size=231" in layout.argv
    assert layout.python is None, "a Node.js environment has no Python interpreter to run anything in"
    major = node.runtime.removeprefix("nodejs").removesuffix(".x")
    assert layout.environ["NODE_PATH"] == f"/opt/nodejs/node{major}/node_modules:/opt/nodejs/node_modules:{TASK_ROOT}"
    own = runtime_layout(LaunchSpec("e2", node.runtime, {"NODE_PATH": "/var/task/lib"}, tmp_path, 128, 512))
    assert own.environ["NODE_PATH"] == "/var/task/lib", "the function's own NODE_PATH is kept"


@pytest.mark.skipif(NODE is None, reason="node is not installed")
def test_the_runtimes_paths_mirror_the_servers() -> None:
    assert NODE is not None
    script = f"process.stdout.write(JSON.stringify(require({str(catalog.BUILTIN_NODE_ENTRY.parent / 'client.js')!r})))"
    exported = json.loads(subprocess.run([NODE, "-e", script], capture_output=True, text=True, check=True).stdout)
    assert exported["NEXT"] == paths.NEXT
    assert exported["INVOCATION_PREFIX"] == paths.INVOCATION_PREFIX
    assert exported["INIT_ERROR"] == paths.INIT_ERROR
    assert exported["FUNCTION_ERROR_TYPE"] == paths.FUNCTION_ERROR_TYPE


def test_the_runtime_ships_in_the_package() -> None:
    # An installed silo has only the files pyproject.toml's package-data names; the runtime needs all of its own.
    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["silo"]
    here = catalog.BUILTIN_NODE_ENTRY.parent
    package = here.parents[1]
    files = [p.relative_to(package).as_posix() for p in here.iterdir() if p.is_file()]
    assert "runtimes/node/index.js" in files and "runtimes/node/package.json" in files
    assert all(any(fnmatch.fnmatch(f, pattern) for pattern in patterns) for f in files), (files, patterns)
    required = {
        m.removeprefix("./") for p in here.glob("*.js") for m in re.findall(r"require\('(\./[^']+)'\)", p.read_text())
    }
    assert {f"runtimes/node/{name}" for name in required} <= set(files), required
