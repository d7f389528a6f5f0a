"""FunctionService: commands, the resolve cache, persistence across restarts, and code collection."""

from __future__ import annotations

import base64
import hashlib
import io
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from silo.config import Settings
from silo.control.functions import FunctionService
from silo.errors import (
    InvalidParameterValueException,
    PreconditionFailedException,
    ResourceConflictException,
    ResourceNotFoundException,
    ValidationException,
)
from silo.store.code import CodeStore
from silo.store.db import Database, open_database

ROLE = "arn:aws:iam::123456789012:role/lambda-role"
ARN = "arn:aws:lambda:us-east-1:000000000000:function"


def make_zip(text: str = "def handler(e, c):\n    return e\n") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        # A fixed timestamp keeps the bytes (and so the sha) the same from call to call.
        zf.writestr(zipfile.ZipInfo("app.py", date_time=(1980, 1, 1, 0, 0, 0)), text)
    return buf.getvalue()


def body(name: str = "fn", code: bytes | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "FunctionName": name,
        "Runtime": "python3.11",
        "Role": ROLE,
        "Handler": "app.handler",
        "Code": {"ZipFile": base64.b64encode(code or make_zip()).decode()},
        **extra,
    }


class World:
    """A data directory and the services opened over it, to test restarts."""

    def __init__(self, data_dir: Path) -> None:
        self.settings = Settings(data_dir=data_dir)
        self.changes: list[tuple[str, str | None]] = []
        self.dbs: list[Database] = []

    def service(self) -> FunctionService:
        db = open_database(self.settings.db_path)
        self.dbs.append(db)
        return FunctionService(
            self.settings,
            db,
            CodeStore(self.settings.code_dir),
            lambda arn, version: self.changes.append((arn, version)),
            available_runtimes=lambda: ["python3.11", "python3.12", "provided.al2023"],
            architecture="x86_64",
        )

    def close(self) -> None:
        for db in self.dbs:
            db.close()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path / "data")
    yield w
    w.close()


@pytest.fixture
def svc(world: World) -> FunctionService:
    return world.service()


def unpacked(world: World) -> set[str]:
    return {p.name for p in (world.settings.code_dir / "unpacked").iterdir()}


def test_create_reports_the_configuration(svc: FunctionService) -> None:
    code = make_zip()
    out = svc.create_function(body(code=code))
    assert out["FunctionName"] == "fn"
    assert out["FunctionArn"] == f"{ARN}:fn"
    assert out["Version"] == "$LATEST"
    assert out["CodeSize"] == len(code)
    assert out["CodeSha256"] == base64.b64encode(hashlib.sha256(code).digest()).decode()
    assert out["State"] == "Active"
    assert out["LastUpdateStatus"] == "Successful"
    assert out["LoggingConfig"] == {"LogFormat": "Text", "LogGroup": "/aws/lambda/fn"}
    assert out["SnapStart"] == {"ApplyOn": "None", "OptimizationStatus": "Off"}
    assert "TenancyConfig" not in out
    assert "Environment" not in out
    assert len(out["LastModified"]) == len("2023-06-12T10:45:00.000+0000")
    assert out["LastModified"].endswith("+0000")


def test_duplicate_name_conflicts(svc: FunctionService, world: World) -> None:
    svc.create_function(body())
    with pytest.raises(ResourceConflictException) as info:
        svc.create_function(body(code=make_zip("other = 1\n")))
    assert info.value.message == "Function already exist: fn"
    assert len(unpacked(world)) == 1, "the refused package must not stay on disk"


def test_get_function_and_configuration_agree(svc: FunctionService) -> None:
    created = svc.create_function(body(Environment={"Variables": {"K1": "v"}}))
    got = svc.get_function("fn", None, lambda name: f"http://silo/code/{name}")
    assert got["Configuration"] == created
    assert got["Code"] == {"RepositoryType": "S3", "Location": "http://silo/code/fn"}
    # Named explicitly, $LATEST is in the ARN, as Lambda reports it (AWS-recorded).
    assert svc.get_function_configuration("fn", "$LATEST") == {**created, "FunctionArn": f"{ARN}:fn:$LATEST"}
    assert svc.get_function_configuration(f"{ARN}:fn", None) == created
    assert svc.get_function_configuration("000000000000:function:fn", None) == created
    assert created["Environment"] == {"Variables": {"K1": "v"}}


def test_get_unknown_function_and_version(svc: FunctionService) -> None:
    with pytest.raises(ResourceNotFoundException) as info:
        svc.get_function_configuration("nope", None)
    assert info.value.message == f"Function not found: {ARN}:nope"
    svc.create_function(body())
    with pytest.raises(ResourceNotFoundException) as info:
        svc.get_function_configuration("fn", "7")
    assert info.value.message == f"Function not found: {ARN}:fn:7"


def test_tenancy_config_is_reported_everywhere(svc: FunctionService) -> None:
    tenancy = {"TenantIsolationMode": "PER_TENANT"}
    views = [svc.create_function(body("iso", TenancyConfig=tenancy))]
    svc.create_function(body("plain"))
    views.append(svc.get_function("iso", None, str)["Configuration"])
    views.append(svc.get_function_configuration("iso", None))
    views.append(next(f for f in svc.list_functions()["Functions"] if f["FunctionName"] == "iso"))
    views.append(svc.update_function_code("iso", {"ZipFile": base64.b64encode(make_zip("x = 2\n")).decode()}))
    views.append(svc.update_function_configuration("iso", {"MemorySize": 256}))
    assert all(v["TenancyConfig"] == tenancy for v in views)
    plain = next(f for f in svc.list_functions()["Functions"] if f["FunctionName"] == "plain")
    assert "TenancyConfig" not in plain
    assert "TenancyConfig" not in svc.get_function_configuration("plain", None)
    assert svc.resolve("iso", None).per_tenant
    assert not svc.resolve("plain", None).per_tenant


def test_tenancy_config_cannot_be_changed_or_added(svc: FunctionService) -> None:
    svc.create_function(body("plain"))
    with pytest.raises(InvalidParameterValueException):
        svc.update_function_configuration("plain", {"TenancyConfig": {"TenantIsolationMode": "PER_TENANT"}})
    assert "TenancyConfig" not in svc.get_function_configuration("plain", None)


def test_list_paginates_by_name(svc: FunctionService) -> None:
    names = [f"fn-{i:03d}" for i in range(120)]
    for name in reversed(names):
        svc.create_function(body(name))
    seen: list[str] = []
    marker = None
    pages = 0
    while True:
        page = svc.list_functions(marker=marker)
        pages += 1
        assert len(page["Functions"]) <= 50
        seen.extend(f["FunctionName"] for f in page["Functions"])
        marker = page.get("NextMarker")
        if marker is None:
            break
    assert seen == names
    assert pages == 3
    small = svc.list_functions(max_items=7)
    assert [f["FunctionName"] for f in small["Functions"]] == names[:7]
    assert svc.list_functions(max_items=1000)["NextMarker"] == names[49]
    last = svc.list_functions(marker=names[-2], max_items=5)
    assert [f["FunctionName"] for f in last["Functions"]] == names[-1:]
    assert "NextMarker" not in last


def test_list_validation(svc: FunctionService) -> None:
    with pytest.raises(ValidationException) as info:
        svc.list_functions(function_version="SOME")
    assert info.value.message == (
        "1 validation error detected: Value 'SOME' at 'functionVersion' failed to satisfy constraint: "
        "Member must satisfy enum value set: [ALL]"
    )
    with pytest.raises(ValidationException):
        svc.list_functions(max_items=0)
    svc.create_function(body())
    assert len(svc.list_functions(function_version="ALL")["Functions"]) == 1


def test_update_code_changes_sha_revision_and_collects_old_code(svc: FunctionService, world: World) -> None:
    first = svc.create_function(body())
    old_dirs = unpacked(world)
    new_code = make_zip("def handler(e, c):\n    return 2\n")
    out = svc.update_function_code("fn", {"ZipFile": base64.b64encode(new_code).decode()})
    assert out["CodeSha256"] != first["CodeSha256"]
    assert out["RevisionId"] != first["RevisionId"]
    assert unpacked(world) == {hashlib.sha256(new_code).hexdigest()}
    assert not old_dirs & unpacked(world)
    assert svc.resolve("fn", None).code_dir.name == hashlib.sha256(new_code).hexdigest()
    assert world.changes == [(f"{ARN}:fn", "$LATEST")]


def test_shared_code_is_kept_until_its_last_user_goes(svc: FunctionService, world: World) -> None:
    code = make_zip()
    svc.create_function(body("a", code=code))
    svc.create_function(body("b", code=code))
    assert len(unpacked(world)) == 1
    svc.delete_function("a")
    assert len(unpacked(world)) == 1
    assert (svc.resolve("b", None).code_dir / "app.py").is_file()
    svc.delete_function("b")
    assert unpacked(world) == set()
    assert list((world.settings.code_dir / "blobs").iterdir()) == []


def test_revision_id_precondition(svc: FunctionService) -> None:
    created = svc.create_function(body())
    with pytest.raises(PreconditionFailedException) as info:
        svc.update_function_configuration("fn", {"Timeout": 10, "RevisionId": "stale"})
    assert info.value.message.startswith("The Revision Id provided does not match the latest Revision Id.")
    with pytest.raises(PreconditionFailedException):
        svc.update_function_code("fn", {"ZipFile": base64.b64encode(make_zip("y=1")).decode(), "RevisionId": "x"})
    updated = svc.update_function_configuration("fn", {"Timeout": 10, "RevisionId": created["RevisionId"]})
    assert updated["Timeout"] == 10
    assert svc.get_function_configuration("fn", None)["RevisionId"] == updated["RevisionId"]


def test_dry_run_changes_nothing(svc: FunctionService, world: World) -> None:
    created = svc.create_function(body())
    before = unpacked(world)
    out = svc.update_function_code("fn", {"ZipFile": base64.b64encode(make_zip("z = 3\n")).decode(), "DryRun": True})
    assert out["CodeSha256"] != created["CodeSha256"]
    assert svc.get_function_configuration("fn", None) == created
    assert unpacked(world) == before
    assert world.changes == []


def test_bad_zip_on_update_keeps_the_function(svc: FunctionService, world: World) -> None:
    created = svc.create_function(body())
    with pytest.raises(InvalidParameterValueException):
        svc.update_function_code("fn", {"ZipFile": base64.b64encode(b"garbage").decode()})
    assert svc.get_function_configuration("fn", None) == created
    assert (svc.resolve("fn", None).code_dir / "app.py").is_file()


def test_delete(svc: FunctionService, world: World) -> None:
    svc.create_function(body())
    with pytest.raises(InvalidParameterValueException) as info:
        svc.delete_function("fn", "$LATEST")
    assert info.value.message == "$LATEST version cannot be deleted without deleting the function."
    svc.delete_function("fn")
    assert world.changes == [(f"{ARN}:fn", None)]
    with pytest.raises(ResourceNotFoundException):
        svc.resolve("fn", None)
    with pytest.raises(ResourceNotFoundException):
        svc.delete_function("fn")


def test_resolve_accepts_every_name_form(svc: FunctionService) -> None:
    svc.create_function(body())
    spec = svc.resolve("fn", None)
    for name, qualifier in [
        ("fn", "$LATEST"),
        ("fn:$LATEST", None),
        (f"{ARN}:fn", None),
        (f"{ARN}:fn:$LATEST", "$LATEST"),
        ("000000000000:function:fn", None),
    ]:
        assert svc.resolve(name, qualifier) is spec


def test_resolve_errors(svc: FunctionService) -> None:
    svc.create_function(body())
    with pytest.raises(ResourceNotFoundException) as info:
        svc.resolve("fn", "prod")
    assert info.value.message == f"Function not found: {ARN}:fn:prod"
    with pytest.raises(ResourceNotFoundException) as info:
        svc.resolve("ghost", None)
    assert info.value.message == f"Function not found: {ARN}:ghost"
    with pytest.raises(InvalidParameterValueException) as ipve:
        svc.resolve(f"{ARN}:fn:1", "2")
    assert ipve.value.message == "The derived qualifier from the function name does not match the specified qualifier."
    with pytest.raises(ResourceNotFoundException):
        svc.resolve("arn:aws:lambda:eu-west-1:000000000000:function:fn", None)
    with pytest.raises(ValidationException):
        svc.resolve("bad name", None)


def test_resolve_spec_fields(svc: FunctionService, world: World) -> None:
    svc.create_function(
        body(
            MemorySize=512,
            Timeout=30,
            EphemeralStorage={"Size": 1024},
            Environment={"Variables": {"GREETING": "hi"}},
            LoggingConfig={"LogFormat": "JSON", "LogGroup": "/custom/g"},
            TenancyConfig={"TenantIsolationMode": "PER_TENANT"},
        )
    )
    spec = svc.resolve("fn", None)
    assert (spec.function_name, spec.function_arn, spec.version) == ("fn", f"{ARN}:fn", "$LATEST")
    assert (spec.memory_mb, spec.timeout_s, spec.ephemeral_mb) == (512, 30, 1024)
    assert spec.environment == {"GREETING": "hi"}
    assert spec.per_tenant
    assert (spec.log_format, spec.log_group, spec.region) == ("JSON", "/custom/g", "us-east-1")
    assert spec.code_dir.parent == world.settings.code_dir / "unpacked"
    assert (spec.code_dir / "app.py").is_file()
    svc.update_function_configuration("fn", {"MemorySize": 1024})
    assert svc.resolve("fn", None).memory_mb == 1024
    assert svc.resolve("fn", None).revision_id != spec.revision_id


def test_state_survives_a_restart(world: World) -> None:
    first = world.service()
    first.create_function(body("iso", TenancyConfig={"TenantIsolationMode": "PER_TENANT"}))
    created = first.create_function(body("plain", Environment={"Variables": {"A1": "b"}}))
    second = world.service()
    assert second.get_function_configuration("plain", None) == created
    assert second.resolve("iso", None).per_tenant
    assert (second.resolve("plain", None).code_dir / "app.py").is_file()
    assert [f["FunctionName"] for f in second.list_functions()["Functions"]] == ["iso", "plain"]
    assert second.function_code("plain") == make_zip()


def test_restart_repairs_lost_unpacked_code_and_drops_orphans(world: World) -> None:
    import shutil

    svc = world.service()
    svc.create_function(body())
    code_dir = svc.resolve("fn", None).code_dir
    shutil.rmtree(code_dir)
    orphan = world.settings.code_dir / "unpacked" / ("0" * 64)
    orphan.mkdir()
    (world.settings.code_dir / "scratch" / "half-written").mkdir()
    again = world.service()
    assert (again.resolve("fn", None).code_dir / "app.py").is_file()
    assert not orphan.exists()
    assert list((world.settings.code_dir / "scratch").iterdir()) == []


def test_account_settings(svc: FunctionService) -> None:
    code = make_zip()
    svc.create_function(body("a", code=code))
    svc.create_function(body("b", code=code))
    out = svc.get_account_settings()
    assert out["AccountLimit"] == {
        "TotalCodeSize": 80530636800,
        "CodeSizeUnzipped": 262144000,
        "CodeSizeZipped": 52428800,
        "ConcurrentExecutions": 1000,
        "UnreservedConcurrentExecutions": 1000,
    }
    assert out["AccountUsage"] == {"TotalCodeSize": 2 * len(code), "FunctionCount": 2}


def test_failing_on_change_does_not_undo_the_update(world: World) -> None:
    def explode(arn: str, version: str | None) -> None:
        raise RuntimeError("router is down")

    svc = world.service()
    svc.on_change = explode
    svc.create_function(body())
    out = svc.update_function_configuration("fn", {"Timeout": 9})
    assert out["Timeout"] == 9
    assert svc.resolve("fn", None).timeout_s == 9


def test_resolve_never_touches_the_database(svc: FunctionService, world: World) -> None:
    svc.create_function(body())
    world.close()  # any query would now raise sqlite3.ProgrammingError
    assert svc.resolve("fn", None).function_name == "fn"
    assert svc.resolve(f"{ARN}:fn", "$LATEST").function_name == "fn"


def test_concurrent_writers_keep_code_and_records_consistent(svc: FunctionService, world: World) -> None:
    from concurrent.futures import ThreadPoolExecutor

    shared = make_zip("shared = 1\n")

    def churn(i: int) -> None:
        name = f"fn-{i}"
        svc.create_function(body(name, code=shared))
        for n in range(3):
            svc.update_function_code(name, {"ZipFile": base64.b64encode(make_zip(f"v = {i}{n}\n")).decode()})
        svc.update_function_code(name, {"ZipFile": base64.b64encode(shared).decode()})
        if i % 2:
            svc.delete_function(name)

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(churn, range(16)))
    alive = [f["FunctionName"] for f in svc.list_functions()["Functions"]]
    assert alive == sorted(f"fn-{i}" for i in range(0, 16, 2))
    assert unpacked(world) == {hashlib.sha256(shared).hexdigest()}
    for name in alive:
        assert (svc.resolve(name, None).code_dir / "app.py").read_text() == "shared = 1\n"
