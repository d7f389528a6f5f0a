"""The Python runtimes ship boto3 and botocore as Lambda's do: a function imports them without bundling
them, gets the versions silo is installed with, and its own (or a layer's) boto3 wins over the runtime's.
The SDK's tree is read-only in every backend, and an environment forked from a template has it too."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from silo.store.sdk import PACKAGES
from tests.compat.test_layers import SITE, publish
from tests.security.test_gvisor import use_gvisor
from tests.support import (
    ROLE,
    SiloServer,
    create_python_function,
    forked_call,
    make_client,
    payload_of,
    python_runtime,
    zip_files,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the jail backend needs root; CI runs these as root")

PROBE = """
import importlib.metadata, os, sys

def handler(event, context):
    import boto3, botocore
    here = os.path.dirname(os.path.dirname(os.path.abspath(boto3.__file__)))
    client = boto3.client("s3", region_name="us-east-1", endpoint_url="http://127.0.0.1:1")
    attempts = {}
    writes = (
        ("change", os.path.join(here, "boto3", "__init__.py"), "a"),
        ("add", os.path.join(here, "mine.py"), "w"),
    )
    for what, path, mode in writes if event.get("write") else ():
        try:
            with open(path, mode) as f:
                f.write("# changed")
            attempts[what] = "written"
        except OSError as exc:
            attempts[what] = type(exc).__name__
    return {
        "boto3": boto3.__version__,
        "botocore": botocore.__version__,
        "dist": importlib.metadata.version("boto3"),
        "dir": here,
        "names": sorted(os.listdir(here)),
        "path": sys.path,
        "endpoint": client.meta.endpoint_url,
        "attempts": attempts,
    }
"""
MINE = "import boto3\n\ndef handler(event, context):\n    return {'boto3': boto3.__version__, 'file': boto3.__file__}\n"
FAKE_BOTO3 = "__version__ = '0.0-mine'\n"
WRITE = {"write": True}  # try to change the SDK's tree (never in the process backend: it would succeed)
EXPECTED = {name: importlib.metadata.version(name) for name in PACKAGES}
# What the tree may hold: the packages' own top-level names, their .dist-info and bytecode, nothing else.
TOP_LEVEL = {"boto3", "botocore", "s3transfer", "jmespath", "dateutil", "six.py", "urllib3", "__pycache__"}


def unique(prefix: str) -> str:
    return f"{prefix}-{os.urandom(3).hex()}"


@pytest.fixture(scope="module")
def stemless(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SiloServer]:
    """A server of its own without stems, so that a new tenant's first call is forked from the template."""
    server = SiloServer(tmp_path_factory.mktemp("sdk") / "data", "--stems-per-function", "0")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(stemless: SiloServer) -> Any:
    return make_client(stemless.endpoint, read_timeout=60)


def check_probe(out: dict[str, Any], sdk_dir: str) -> None:
    assert (out["boto3"], out["botocore"], out["dist"]) == (EXPECTED["boto3"], EXPECTED["botocore"], EXPECTED["boto3"])
    assert out["dir"] == sdk_dir
    assert out["endpoint"] == "http://127.0.0.1:1", "a client is built offline, without any network"
    assert {n for n in out["names"] if not n.endswith(".dist-info")} <= TOP_LEVEL, out["names"]
    assert not any(n.startswith("silo") for n in out["names"]), "nothing of silo's own install is shown"
    assert set(out["attempts"]) == {"change", "add"}, "the probe tried both writes"
    assert set(out["attempts"].values()) <= {"OSError", "PermissionError"}, out["attempts"]
    path = out["path"]
    assert path[0] == "/var/task" and path.index(sdk_dir) > 0
    assert path.index(sdk_dir) > max(i for i, p in enumerate(path) if p.startswith("/opt/python")), path


def probe(client: Any, name: str) -> Any:
    response = client.invoke(FunctionName=name, Payload=json.dumps(WRITE).encode())
    out = payload_of(response)
    assert "FunctionError" not in response, out
    return out


def lambda_sdk_dir() -> str:
    return f"/var/lang/lib/python3.{sys.version_info.minor}/site-packages"


def test_a_function_imports_the_shipped_boto3_without_bundling_it(client: Any) -> None:
    name = unique("sdk")
    create_python_function(client, name, PROBE)
    check_probe(probe(client, name), lambda_sdk_dir())


def test_a_bundled_boto3_wins_over_the_runtime_s(client: Any) -> None:
    name = unique("mine")
    client.create_function(
        FunctionName=name,
        Runtime=python_runtime(),
        Role=ROLE,
        Handler="app.handler",
        Code={"ZipFile": zip_files({"app.py": MINE, "boto3/__init__.py": FAKE_BOTO3})},
    )
    client.get_waiter("function_active_v2").wait(FunctionName=name)
    out = payload_of(client.invoke(FunctionName=name))
    assert out == {"boto3": "0.0-mine", "file": "/var/task/boto3/__init__.py"}


def test_a_layer_s_boto3_wins_over_the_runtime_s(client: Any) -> None:
    layer = publish(client, unique("boto3-layer"), {f"{SITE}/boto3/__init__.py": FAKE_BOTO3})
    name = unique("layered")
    create_python_function(client, name, MINE, Layers=[layer["LayerVersionArn"]])
    out = payload_of(client.invoke(FunctionName=name))
    assert out == {"boto3": "0.0-mine", "file": f"/opt/{SITE}/boto3/__init__.py"}


def test_a_forked_environment_has_the_sdk(client: Any) -> None:
    """The template never imports boto3 (its fork would share it); the fork finds it on its own path."""
    name = unique("forked")
    create_python_function(client, name, PROBE, per_tenant=True)
    check_probe(forked_call(client, name, "t", WRITE), lambda_sdk_dir())


@pytest.mark.skipif(shutil.which("runsc") is None, reason="runsc is not installed (.ci/run installs it)")
def test_the_sdk_under_gvisor(client: Any, stemless: SiloServer) -> None:
    name = unique("sdk-gv")
    create_python_function(client, name, PROBE)
    use_gvisor(stemless, name)
    check_probe(probe(client, name), lambda_sdk_dir())


def test_the_sdk_in_the_process_backend(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The development backend shows the tree where it is on the host, after the code on the path."""
    server = SiloServer(tmp_path_factory.mktemp("sdk-process") / "data", "--sandbox", "process")
    server.start()
    try:
        client = make_client(server.endpoint, read_timeout=60)
        name = unique("sdk-proc")
        create_python_function(client, name, PROBE)
        response = client.invoke(FunctionName=name)
        out = payload_of(response)
        assert "FunctionError" not in response, out
        sdk_dir = str(server.data_dir / "runtime-sdk")
        assert out["dir"].startswith(sdk_dir + "/") and out["dir"].endswith(f"/{python_runtime()}")
        assert out["boto3"] == EXPECTED["boto3"] and out["endpoint"] == "http://127.0.0.1:1"
        assert out["path"].index(out["dir"]) > 0
    finally:
        server.stop()
