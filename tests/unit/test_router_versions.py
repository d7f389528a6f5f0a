"""Environments are kept per function version: retiring `$LATEST`'s (after an update) leaves a published
version's warm, and retiring the whole function (after a delete) ends them all."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

from silo.router.pool import Router
from silo.sandbox.process import ProcessSandbox
from silo.telemetry.recorder import Telemetry
from silo.types import EnvKey, FunctionSpec, Invocation
from tests.support import function_spec

APP = "def handler(event, context):\n    return {'version': context.function_version}\n"


def spec_of(tmp_path: Path, version: str) -> FunctionSpec:
    code = tmp_path / f"code-{version.strip('$')}"
    code.mkdir()
    (code / "app.py").write_text(APP)
    return replace(function_spec("f", per_tenant=False), code_dir=code, version=version, revision_id=version)


def test_retiring_one_version_leaves_the_others_warm(tmp_path: Path) -> None:
    latest, one = spec_of(tmp_path, "$LATEST"), spec_of(tmp_path, "1")

    async def main() -> None:
        router = Router(ProcessSandbox(tmp_path / "envs"), telemetry=Telemetry())
        try:
            for spec in (latest, one):
                inv = Invocation(request_id=f"r-{spec.version}", payload=b"{}", tenant_id=None, invoked_arn="a")
                result = await router.invoke(EnvKey(spec.function_arn, spec.version, None), spec, inv)
                assert (result.executed_version, result.payload) == (
                    spec.version,
                    f'{{"version": "{spec.version}"}}'.encode(),
                )
            assert sorted(e.key.version for e in router.environments()) == ["$LATEST", "1"]
            router.retire(latest.function_arn, "$LATEST")
            assert [e.key.version for e in router.environments()] == ["1"]
            router.retire(latest.function_arn, None)
            assert list(router.environments()) == []
        finally:
            await router.close()

    asyncio.run(main())
