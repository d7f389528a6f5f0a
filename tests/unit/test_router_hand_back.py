"""A call that finds its idle environment's runtime ended (it exited after answering its previous call, as a
Node.js runtime does after reporting an uncaught exception) never ran there: it runs in a new environment,
not as a `Runtime.ExitError` of a process the call never reached. The router runs here over the development
backend, with a custom runtime that answers once and then exits instead of asking for another call."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

from silo.router.pool import Router
from silo.router.stems import StemPolicy
from silo.sandbox.process import ProcessSandbox
from silo.types import EnvKey, FunctionSpec, Invocation, InvocationResult
from tests.support import function_spec

# Answers one call with its pid, then ends without asking for another: a call sent to it after that was
# never delivered. It waits before ending so that the next call finds it idle, as a frozen one is found.
ANSWERS_ONCE = """#!/usr/bin/env python3
import os, time, urllib.request
api = "http://" + os.environ["AWS_LAMBDA_RUNTIME_API"] + "/2018-06-01/runtime/invocation/"
with urllib.request.urlopen(api + "next") as r:
    rid = r.headers["Lambda-Runtime-Aws-Request-Id"]
urllib.request.urlopen(urllib.request.Request(api + rid + "/response", data=str(os.getpid()).encode())).read()
time.sleep(0.5)
os._exit(3)
"""

# Takes the call, then ends without answering: that call did reach it, so it is the call's own error.
TAKES_AND_DIES = """#!/usr/bin/env python3
import os, urllib.request
api = "http://" + os.environ["AWS_LAMBDA_RUNTIME_API"] + "/2018-06-01/runtime/invocation/"
urllib.request.urlopen(api + "next").read()
os._exit(3)
"""


def custom(tmp_path: Path, bootstrap: str) -> FunctionSpec:
    code = tmp_path / "code"
    code.mkdir()
    (code / "bootstrap").write_text(bootstrap)
    (code / "bootstrap").chmod(0o755)
    return replace(function_spec("f"), runtime="provided.al2023", code_dir=code, timeout_s=10)


async def call(router: Router, spec: FunctionSpec, request_id: str) -> InvocationResult:
    inv = Invocation(request_id, b"{}", "a", spec.function_arn)
    return await router.invoke(EnvKey(spec.function_arn, spec.version, "a"), spec, inv)


def test_a_call_never_delivered_to_an_ended_runtime_runs_in_a_new_environment(tmp_path: Path) -> None:
    spec = custom(tmp_path, ANSWERS_ONCE)

    async def main() -> None:
        router = Router(ProcessSandbox(tmp_path / "envs"), stems=StemPolicy(per_function=0))
        try:
            first = await call(router, spec, "r1")
            assert first.function_error is None, first.payload
            second = await call(router, spec, "r2")
            assert second.function_error is None, second.payload
            assert second.payload != first.payload, "the call was answered by the environment that had ended"
        finally:
            await router.close()

    asyncio.run(main())


def test_a_runtime_that_ends_with_the_call_delivered_is_that_calls_exit_error(tmp_path: Path) -> None:
    spec = custom(tmp_path, TAKES_AND_DIES)

    async def main() -> None:
        router = Router(ProcessSandbox(tmp_path / "envs"), stems=StemPolicy(per_function=0))
        try:
            result = await call(router, spec, "r1")
            assert result.function_error is not None
            assert b"Runtime.ExitError" in result.payload and b"exit status 3" in result.payload
        finally:
            await router.close()

    asyncio.run(main())
