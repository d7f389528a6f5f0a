"""The SDK's trees (silo.store.sdk): exactly the SDK's packages from the server's install, one read-only
tree per runtime with that runtime's bytecode, rebuilt when the installed versions change."""

from __future__ import annotations

import importlib.metadata
import marshal
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from silo.runtimes import catalog
from silo.runtimes.python import loop
from silo.sandbox.base import LaunchSpec
from silo.sandbox.layout import runtime_layout
from silo.store import sdk

RUNTIME = f"python3.{sys.version_info.minor}"
TAG = sys.implementation.cache_tag


def trees(tmp_path: Path) -> sdk.RuntimeSdk:
    return sdk.RuntimeSdk(tmp_path / "runtime-sdk", {RUNTIME: Path(sys.executable)})


def test_the_tree_holds_the_sdk_and_nothing_else_of_the_install(tmp_path: Path) -> None:
    tree = trees(tmp_path).directory(RUNTIME)
    names = set(os.listdir(tree))
    packages = {"boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3", "six.py", "__pycache__"}
    assert {n for n in names if not n.endswith(".dist-info")} == packages
    assert len([n for n in names if n.endswith(".dist-info")]) == len(sdk.PACKAGES)
    assert not any(n.startswith(("silo", "pip", "setuptools", "starlette", "_")) for n in names - {"__pycache__"})
    # Its bytecode is this runtime's, named as environments see the files (tracebacks show Lambda's path).
    compiled = tree / "botocore" / "__pycache__" / f"client.{TAG}.pyc"
    assert compiled.is_file()
    # After the header (magic, flags, the source's mtime and size): the code object.
    code = marshal.loads(compiled.read_bytes()[16:])
    assert code.co_filename == f"{catalog.sdk_path(RUNTIME)}/botocore/client.py"


def test_the_tree_is_sealed_and_imports_offline(tmp_path: Path) -> None:
    tree = trees(tmp_path).directory(RUNTIME)
    assert all(os.stat(d).st_mode & 0o777 == 0o555 for d, _, _ in os.walk(tree))
    script = (
        "import sys; sys.path.append(sys.argv[1]); import boto3, botocore;"
        "c = boto3.client('s3', region_name='us-east-1', endpoint_url='http://127.0.0.1:1');"
        "print(boto3.__file__, boto3.__version__, botocore.__version__)"
    )
    out = subprocess.run([sys.executable, "-S", "-c", script, str(tree)], capture_output=True, text=True, check=True)
    file, boto3_version, botocore_version = out.stdout.split()
    assert file.startswith(str(tree) + "/")
    assert (boto3_version, botocore_version) == (
        importlib.metadata.version("boto3"),
        importlib.metadata.version("botocore"),
    )


def test_built_once_and_replaced_when_versions_change(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = trees(tmp_path)
    tree = first.directory(RUNTIME)
    marker = os.stat(tree).st_ino
    assert trees(tmp_path).directory(RUNTIME) == tree and os.stat(tree).st_ino == marker, "built once"
    real = sdk.installed_versions()
    monkeypatch.setattr(sdk, "installed_versions", lambda: {**real, "boto3": "9.9.9"})
    upgraded = trees(tmp_path)
    assert upgraded.root != first.root
    assert not first.root.exists(), "the tree of the versions no longer installed is removed at start"


def test_a_missing_package_refuses_the_start(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def version(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", version)
    with pytest.raises(sdk.SdkError, match="boto3 is not installed with silo"):
        trees(tmp_path)


def test_the_layout_binds_the_tree_at_lambda_s_site_packages(tmp_path: Path) -> None:
    code = tmp_path / "code"
    code.mkdir()
    spec = LaunchSpec("e", RUNTIME, {}, code, 128, 512, sdk_dir=tmp_path / "sdk")
    binds = [(b.source, b.target, b.writable) for b in runtime_layout(spec).binds]
    assert (str(tmp_path / "sdk"), f"/var/lang/lib/{RUNTIME}/site-packages", False) in binds
    # After the interpreter's own /var/lang, which it covers part of.
    targets = [t for _, t, _ in binds]
    if "/var/lang" in targets:
        assert targets.index("/var/lang") < targets.index(f"/var/lang/lib/{RUNTIME}/site-packages")


def test_the_runtime_puts_the_sdk_after_the_code_the_layers_and_the_stdlib() -> None:
    assert loop.sdk_path("/var/task", {}) == catalog.sdk_path(RUNTIME)
    assert loop.sdk_path("/somewhere/code", {catalog.SDK_VARIABLE: "/host/sdk"}) == "/host/sdk"
    assert loop.sdk_path("/somewhere/code", {}) is None
    assert loop.SDK_VARIABLE == catalog.SDK_VARIABLE


def test_the_readme_names_the_locked_versions_the_runtimes_ship() -> None:
    root = Path(__file__).resolve().parents[2]
    locked = dict(re.findall(r"^([a-z0-9-]+)==(\S+)", (root / "requirements" / "server.txt").read_text(), re.M))
    readme = " ".join((root / "README.md").read_text().split())
    for name in sdk.PACKAGES:
        assert f"{name} {locked[name]}" in readme, f"README.md should say the runtimes ship {name} {locked[name]}"
