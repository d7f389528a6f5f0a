"""Fixtures shared by every test that needs a real `silo serve`."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import SiloServer, make_client


@pytest.fixture(scope="session")
def silo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SiloServer]:
    server = SiloServer(tmp_path_factory.mktemp("silo") / "data")
    server.start()
    yield server
    server.stop()


@pytest.fixture()
def lambda_client(silo_server: SiloServer) -> Any:
    return make_client(silo_server.endpoint)


@pytest.fixture()
def aws_cli(silo_server: SiloServer) -> Any:
    aws = str(Path(sys.executable).parent / "aws")

    def run(*args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [aws, *args, "--endpoint-url", silo_server.endpoint, "--region", "us-east-1"],
            capture_output=True,
            text=True,
            timeout=120,
            check=check,
            env={**os.environ, **silo_server.aws_env(), "AWS_PAGER": ""},
        )

    return run


@pytest.fixture()
def unique_name(request: pytest.FixtureRequest) -> str:
    base = "".join(c if c.isalnum() else "-" for c in request.node.name)[:40].strip("-")
    return f"{base}-{os.urandom(3).hex()}"
