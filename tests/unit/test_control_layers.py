"""LayerService with FunctionService: what a function's layers resolve to, what is kept while used, and
what a restart repairs."""

from __future__ import annotations

import base64
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from silo.control.functions import FunctionService
from silo.control.layers import tree_digest, used_layers
from silo.errors import InvalidParameterValueException, ResourceNotFoundException
from tests.support import zip_files
from tests.unit.test_control_functions import World, body

LAYER = "arn:aws:lambda:us-east-1:000000000000:layer:{}:{}"


def location(name: str, version: int) -> str:
    return f"http://silo/{name}/{version}"


@pytest.fixture()
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path / "data")
    yield w
    w.close()


def publish(service: FunctionService, name: str, files: dict[str, str | bytes]) -> dict[str, Any]:
    content = {"ZipFile": base64.b64encode(zip_files(files)).decode()}
    return service.layers.publish_layer_version(name, {"Content": content}, location)


def opt_of(service: FunctionService, name: str, version: str = "$LATEST") -> Path:
    spec = service.resolve(name, version)
    assert spec.opt_dir is not None
    return spec.opt_dir


def test_a_function_runs_its_layers_merged_in_order(world: World) -> None:
    service = world.service()
    publish(service, "a", {"shared": "a", "only-a": "1"})
    publish(service, "b", {"shared": "b"})
    service.create_function(body("fn", Layers=[LAYER.format("a", 1), LAYER.format("b", 1)]))
    opt = opt_of(service, "fn")
    assert (opt / "shared").read_text() == "b" and (opt / "only-a").read_text() == "1"
    with pytest.raises(InvalidParameterValueException, match="does not exist"):
        service.create_function(body("other", Layers=[LAYER.format("a", 2)]))
    with pytest.raises(ResourceNotFoundException):
        service.get_function_configuration("other", None)


def test_a_deleted_layer_version_is_kept_while_used_and_collected_after(world: World) -> None:
    service = world.service()
    publish(service, "a", {"f": "a"})
    service.create_function(body("fn", Layers=[LAYER.format("a", 1)]))
    layers = used_layers(service.repo.get("fn").config)  # type: ignore[union-attr]
    sha = layers[0].code_sha256
    service.layers.delete_layer_version("a", 1)
    assert service.layers.code.has(sha)
    assert (opt_of(service, "fn") / "f").read_text() == "a"
    service.delete_function("fn")
    assert not service.layers.code.has(sha)
    assert not service.layers.opt.directory(tree_digest(layers)).exists()


def test_changing_layers_collects_the_old_merge(world: World) -> None:
    service = world.service()
    publish(service, "a", {"f": "a"})
    publish(service, "b", {"f": "b"})
    service.create_function(body("fn", Layers=[LAYER.format("a", 1)]))
    old = opt_of(service, "fn")
    service.update_function_configuration("fn", {"Layers": [LAYER.format("b", 1)]})
    assert (opt_of(service, "fn") / "f").read_text() == "b"
    assert not old.exists()
    # The layer version itself is still published, so its code stays.
    assert service.layers.get_layer_version("a", 1, location)["Version"] == 1


def test_a_restart_repairs_unpacked_layers_and_merges_from_the_zips(world: World) -> None:
    service = world.service()
    publish(service, "a", {"python/mod.py": "X = 1\n"})
    service.create_function(body("fn", Layers=[LAYER.format("a", 1)]))
    service.publish_version("fn", {})
    layers = used_layers(service.repo.get("fn").config)  # type: ignore[union-attr]
    opt = opt_of(service, "fn")
    for lost in (opt, service.layers.code.directory(layers[0].code_sha256)):
        for d in (lost, *[p for p in lost.rglob("*") if p.is_dir()]):
            d.chmod(0o755)
        shutil.rmtree(lost)
    again = world.service()
    assert (opt_of(again, "fn", "1") / "python/mod.py").read_text() == "X = 1\n"


def test_the_unzipped_limit_counts_code_and_layers(world: World) -> None:
    service = world.service()
    service.code.max_unzipped = 1000
    publish(service, "big", {"f": "x" * 600})
    with pytest.raises(InvalidParameterValueException, match="Function code combined with layers exceeds"):
        service.create_function(body("fn", code=zip_files({"app.py": "y" * 500}), Layers=[LAYER.format("big", 1)]))
    service.create_function(body("fn", code=zip_files({"app.py": "y" * 300}), Layers=[LAYER.format("big", 1)]))
    with pytest.raises(InvalidParameterValueException, match="The actual size is 1100 bytes"):
        service.update_function_code("fn", {"ZipFile": base64.b64encode(zip_files({"app.py": "y" * 500})).decode()})


def test_account_usage_counts_layer_archives(world: World) -> None:
    service = world.service()
    before = service.get_account_settings()["AccountUsage"]["TotalCodeSize"]
    published = publish(service, "a", {"f": "x" * 100})
    after = service.get_account_settings()["AccountUsage"]["TotalCodeSize"]
    assert after - before == published["Content"]["CodeSize"]
