"""The router: EnvKey -> environments. Takes an idle environment of the key, or starts a new one.

An environment serves one invocation at a time and only ever its own key's tenant; concurrent calls
of one tenant get more environments of that tenant. Retiring a function (new code or configuration,
or deletion) kills its idle environments now and its busy ones when their invocation ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from silo import errors
from silo.router.environment import Environment
from silo.router.placement import Choice, place
from silo.sandbox.base import Sandbox
from silo.types import EnvKey, EnvState, FunctionSpec, Invocation, InvocationResult

log = logging.getLogger(__name__)


class Router:
    """Owns every live environment of this server."""

    def __init__(self, sandbox: Sandbox, others: dict[str, Sandbox] | None = None) -> None:
        """`sandbox` runs every function by default; `others` are the backends a function may ask for by name."""
        self.sandbox = sandbox
        self.sandboxes = {sandbox.name: sandbox, **(others or {})}
        self._pools: dict[EnvKey, list[Environment]] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def environments(self) -> Iterable[Environment]:
        for pool in self._pools.values():
            yield from pool

    def _acquire(self, key: EnvKey, spec: FunctionSpec) -> tuple[Environment, bool]:
        """Decide and book in one step (no await), so two calls never get the same environment."""
        pool = self._pools.setdefault(key, [])
        decision = place(pool, spec.revision_id)
        chosen = pool[decision.index] if decision.choice is Choice.REUSE else None
        for i in sorted(decision.stale, reverse=True):
            self._discard(pool.pop(i))
        if chosen is not None:
            chosen.state = EnvState.BUSY
            return chosen, False
        env = Environment(key, spec)
        env.state = EnvState.BUSY
        pool.append(env)
        return env, True

    def _release(self, env: Environment) -> None:
        pool = self._pools.get(env.key, [])
        if env.alive and not env.retired:
            env.state = EnvState.IDLE
            # Most recently used last: placement reuses from the end, so warm caches stay warm.
            if env in pool:
                pool.remove(env)
                pool.append(env)
            return
        if env in pool:
            pool.remove(env)
        if not pool:
            self._pools.pop(env.key, None)
        self._discard(env)

    def _discard(self, env: Environment) -> None:
        env.kill()
        task = asyncio.ensure_future(env.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def invoke(self, key: EnvKey, spec: FunctionSpec, inv: Invocation) -> InvocationResult:
        """Run `inv` in an environment of `key`: a warm one of that key if idle, else a new one."""
        backend = self._backend(spec)
        env, fresh = self._acquire(key, spec)
        try:
            if fresh:
                await env.start(backend)
            return await env.invoke(inv)
        finally:
            self._release(env)

    def _backend(self, spec: FunctionSpec) -> Sandbox:
        if spec.sandbox == "default":
            return self.sandbox
        backend = self.sandboxes.get(spec.sandbox)
        if backend is None:
            raise errors.ServiceException(
                f"Function {spec.function_name} asks for the {spec.sandbox!r} sandbox backend, which this server "
                f"does not offer (it has: {', '.join(sorted(self.sandboxes))}). Change the function's Sandbox "
                "setting, or start silo where that backend is available."
            )
        return backend

    def retire(self, function_arn: str) -> None:
        """The function changed or is gone: no environment of it may serve another call."""
        for key in [k for k in self._pools if k.function_arn == function_arn]:
            pool = self._pools[key]
            for env in list(pool):
                env.retired = True
                if env.state is not EnvState.BUSY:
                    pool.remove(env)
                    self._discard(env)
            if not pool:
                del self._pools[key]

    async def close(self) -> None:
        """Kill every environment and wait until each is cleaned up."""
        for pool in self._pools.values():
            for env in pool:
                env.retired = True
                self._discard(env)
        self._pools.clear()
        if self._closing:
            results = await asyncio.gather(*self._closing, return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    log.error("an environment could not be cleaned up: %r", result)
