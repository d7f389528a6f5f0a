"""The router: EnvKey -> environments, under Lambda's limits and silo's per-tenant ones.

An environment serves one invocation at a time and only ever its own key's tenant; concurrent calls
of one tenant get more environments of that tenant. Before a call runs it is admitted (concurrency
limits); before a new environment starts there must be room for it (environment caps and the host
memory budget), made by evicting idle environments least recently used first, and only then is the
call throttled. When the shared pool of concurrency is full, calls wait in a fair queue that takes
tenants in turn, so a tenant that calls fastest does not take every freed slot.

Every decision and its bookkeeping happen without an await in between, so on the single event loop
they are atomic; starting and killing processes happen after.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import cast

from silo import errors
from silo.credentials.vendor import CredentialVendor
from silo.router import limits
from silo.router.environment import INIT_TIMEOUT_S, EndedBetweenCalls, Environment, TenantMismatch
from silo.router.fairness import FairQueue
from silo.router.placement import Choice, place
from silo.router.stems import StemKey, StemPolicy, StemPools, VersionKey
from silo.sandbox.base import Sandbox
from silo.telemetry.recorder import Telemetry
from silo.types import EnvKey, EnvState, FunctionSpec, Invocation, InvocationResult

log = logging.getLogger(__name__)

TenantKey = tuple[str, str | None]
# How many idle environments one call may find ended (their runtimes exited after their previous call)
# before it runs in one it takes next, whatever that one's fate.
HAND_BACKS = 3
# How often the stems are tended when nothing else prompts it: growth that the host's memory put off is
# tried again, and versions whose new tenants slowed give stems back.
STEM_TICK_S = 1.0


def _throttle(reason: limits.Reason, retry_after_s: int = 1) -> errors.TooManyRequestsException:
    return errors.TooManyRequestsException(limits.MESSAGES[reason], reason.value, retry_after_s)


class Router:
    """Owns every live environment of this server and the limits on them."""

    def __init__(
        self,
        sandbox: Sandbox,
        others: dict[str, Sandbox] | None = None,
        *,
        account: limits.AccountLimits | None = None,
        reserved_total: Callable[[], int] = lambda: 0,
        keep_alive_s: float = 600.0,
        queue_wait_s: float = 2.0,
        telemetry: Telemetry | None = None,
        stems: StemPolicy | None = None,
        credentials: CredentialVendor | None = None,
        init_timeout_s: float = INIT_TIMEOUT_S,
    ) -> None:
        """`sandbox` runs every function by default; `others` are the backends a function may ask for by name.

        `reserved_total()` is the sum of every function's reserved concurrency (the control plane knows
        it); `keep_alive_s` is how long an idle environment lives; `queue_wait_s` how long a call may
        wait for a slot of the shared pool before it is throttled.
        """
        self.sandbox = sandbox
        self.sandboxes = {sandbox.name: sandbox, **(others or {})}
        self.telemetry = telemetry
        if telemetry is not None:
            # Whether tenants are isolated is for everyone to read: /metrics and /silo/v1/server say it.
            telemetry.backends(sandbox.name, {name: b.isolates for name, b in self.sandboxes.items()})
        self.account = account or limits.AccountLimits()
        self._reserved_total = reserved_total
        self.keep_alive_s = keep_alive_s
        self.init_timeout_s = init_timeout_s  # each environment's init phase, at most
        self.queue_wait_s = queue_wait_s
        self._pools: dict[EnvKey, list[Environment]] = {}
        self._idle: OrderedDict[Environment, None] = OrderedDict()  # least recently used first
        self._closing: set[asyncio.Task[None]] = set()
        # Counts the decisions read; changed only by _track/_forget and _start/_finish.
        self._running_fn: Counter[str] = Counter()
        self._running_tenant: Counter[TenantKey] = Counter()
        self._running_unreserved = 0
        self._cpu_divisors: dict[EnvKey, int] = {}  # only those not 1 (see _share_cpu)
        self._envs_fn: Counter[str] = Counter()
        self._envs_tenant: Counter[TenantKey] = Counter()
        self._live_memory_mb = 0.0
        self._queue = FairQueue()
        self.evictions = 0
        self._reaper: asyncio.Task[None] | None = None
        # A version's stems are given back once it has had no new tenant for as long as an idle environment
        # lives, if that is shorter than the policy's own quiet time.
        policy = stems or StemPolicy()
        self.stems = StemPools(replace(policy, quiet_s=min(policy.quiet_s, keep_alive_s)))
        self._stem_specs: dict[VersionKey, FunctionSpec] = {}  # what stems of each version are grown from
        self.credentials = credentials
        self._growing: set[asyncio.Task[None]] = set()
        self._stem_ticker: asyncio.Task[None] | None = None
        self._closed = False

    # Introspection, for metrics and tests.
    def environments(self) -> Iterable[Environment]:
        for pool in self._pools.values():
            yield from pool
        for stem in self.stems.all():
            yield cast(Environment, stem)

    @property
    def live_memory_mb(self) -> float:
        return self._live_memory_mb

    # Environments: tracking, eviction, retirement.
    def _track(self, env: Environment) -> None:
        self._pools.setdefault(env.key, []).append(env)
        self._envs_fn[env.key.function_arn] += 1
        self._envs_tenant[(env.key.function_arn, env.key.tenant_id)] += 1
        self._live_memory_mb += env.charged_mb

    def _forget(self, env: Environment) -> None:
        """Take an environment out of every count and kill it; the clean-up runs in the background."""
        pool = self._pools.get(env.key)
        if pool is not None and env in pool:
            pool.remove(env)
            if not pool:
                del self._pools[env.key]
            self._envs_tenant[(env.key.function_arn, env.key.tenant_id)] -= 1
        elif not self.stems.discard(env):
            return
        self._idle.pop(env, None)
        self._envs_fn[env.key.function_arn] -= 1
        self._live_memory_mb -= env.charged_mb
        env.retired = True
        env.kill()
        task = asyncio.ensure_future(env.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _ended(self, env: Environment) -> None:
        """An environment's process ended. One that was waiting (idle, or a ready stem) is dropped now,
        so no call is handed to it; a busy one is its call's to report and release."""
        if env.state in (EnvState.IDLE, EnvState.STEM) and not env.retired:
            log.info("an idle environment of %s ended on its own; it is replaced when needed", env.spec.function_name)
            self._forget(env)

    def _evict_one(self, scope: limits.Scope, key: EnvKey, keep: Environment | None = None) -> bool:
        """Evict the least recently used idle environment within `scope` of `key`; False if there is none.
        A stem still growing goes first: it is charged its whole MemorySize until its init is done, and a
        call that needs the room must not wait for (or be throttled by) an environment nobody asked for."""
        if scope is not limits.Scope.TENANT:
            for stem in self.stems.all():
                env = cast(Environment, stem)
                if (
                    env is not keep
                    and env.state is EnvState.STARTING
                    and (scope is limits.Scope.HOST or env.key.function_arn == key.function_arn)
                ):
                    self._evicted(env, scope)
                    return True
        for env in self._idle:
            if env is keep:
                continue
            if (
                scope is limits.Scope.HOST
                or (scope is limits.Scope.FUNCTION and env.key.function_arn == key.function_arn)
                or (
                    scope is limits.Scope.TENANT
                    and env.key.function_arn == key.function_arn
                    and env.key.tenant_id == key.tenant_id
                )
            ):
                self._evicted(env, scope)
                return True
        return False

    def _evicted(self, env: Environment, scope: limits.Scope) -> None:
        self.evictions += 1
        if self.telemetry is not None:
            self.telemetry.evicted(env.spec.function_name, scope.value)
        self._forget(env)

    # Memory: a busy or starting environment counts at its MemorySize, all it may use; an idle one at what
    # it holds, measured, since it does nothing until it is busy again and counts in full again.
    def _charge(self, env: Environment, mb: float) -> None:
        self._live_memory_mb += mb - env.charged_mb
        env.charged_mb = mb

    def _charge_in_full(self, env: Environment, key: EnvKey) -> None:
        """An idle environment or stem is about to run: make room for its whole MemorySize, or throttle."""
        while self._live_memory_mb - env.charged_mb + env.spec.memory_mb > self.account.memory_budget_mb:
            if not self._evict_one(limits.Scope.HOST, key, keep=env):
                raise _throttle(limits.Reason.MEMORY)
        self._charge(env, env.spec.memory_mb)

    def _make_room(self, key: EnvKey, spec: FunctionSpec, fl: limits.FunctionLimits) -> None:
        """Evict idle environments until a new one of `key` fits every cap, or throttle."""
        while True:
            needed = limits.room_for_environment(
                fl,
                self.account,
                self._reserved_total(),
                spec.per_tenant,
                self._envs_tenant[(key.function_arn, key.tenant_id)],
                self._envs_fn[key.function_arn],
                self._live_memory_mb,
                spec.memory_mb,
            )
            if not needed:
                return
            scope = needed[0]
            if not self._evict_one(scope, key):
                if scope is limits.Scope.FUNCTION:
                    raise errors.TooManyRequestsException(limits.ENVIRONMENT_CAP_MESSAGE, limits.Reason.ACCOUNT.value)
                raise _throttle(
                    limits.Reason.TENANT_ENVIRONMENTS if scope is limits.Scope.TENANT else limits.Reason.MEMORY
                )

    def _acquire(self, key: EnvKey, spec: FunctionSpec, fl: limits.FunctionLimits) -> tuple[Environment, bool]:
        """An idle environment of `key`, or room for and a new one. Decides and books in one step."""
        pool = self._pools.get(key, [])
        decision = place(pool, spec.revision_id)
        chosen = pool[decision.index] if decision.choice is Choice.REUSE else None
        for env in [pool[i] for i in decision.stale]:
            self._forget(env)
        if chosen is not None:
            self._charge_in_full(chosen, key)
            self._idle.pop(chosen, None)
            chosen.state = EnvState.BUSY
            chosen.divide_cpu(self._cpu_divisors.get(key, 1))
            return chosen, False
        if spec.per_tenant:
            for stale in self.stems.new_tenant((key.function_arn, key.version, spec.revision_id), spec.memory_mb):
                self._forget(cast(Environment, stale))  # grown from code the version no longer has
            self._stem_specs[(key.function_arn, key.version)] = spec
            stem = self._bind_stem(key, spec, fl)
            if stem is not None:
                stem.divide_cpu(self._cpu_divisors.get(key, 1))
                return stem, False
        self._make_room(key, spec, fl)
        env = Environment(
            key,
            spec,
            self.telemetry,
            on_exit=self._ended,
            credentials=self.credentials,
            init_timeout_s=self.init_timeout_s,
        )
        env.state = EnvState.BUSY
        env.divide_cpu(self._cpu_divisors.get(key, 1))
        self._track(env)
        return env, True

    # Stems: grown ahead for no tenant, bound to a new tenant's first call.
    def _bind_stem(self, key: EnvKey, spec: FunctionSpec, fl: limits.FunctionLimits) -> Environment | None:
        stem_key = (key.function_arn, key.version, spec.revision_id)
        taken = self.stems.take(stem_key)
        if taken is None:
            return None
        stem = cast(Environment, taken)
        self._idle.pop(stem, None)
        # Bound, the stem counts as one of its tenant's environments; the caps it now falls under were
        # checked when it was grown only for the function and the host, so check the tenant's now.
        if (
            fl.tenant_environments is not None
            and self._envs_tenant[(key.function_arn, key.tenant_id)] >= (fl.tenant_environments)
            and not self._evict_one(limits.Scope.TENANT, key)
        ):
            self._put_back(stem_key, stem)
            raise _throttle(limits.Reason.TENANT_ENVIRONMENTS)
        try:
            self._charge_in_full(stem, key)
        except errors.TooManyRequestsException:
            self._put_back(stem_key, stem)
            raise
        try:
            stem.bind(key)
        except OSError as exc:
            log.warning("a stem of %s was dropped instead of bound: %s", spec.function_name, exc)
            self.stems.add(stem_key, stem)
            self._forget(stem)
            return None
        except TenantMismatch:
            # bind() ended it (it was no unbound stem): out of every count, and the call fails loudly.
            self.stems.add(stem_key, stem)
            self._forget(stem)
            raise
        self._pools.setdefault(key, []).append(stem)
        self._envs_tenant[(key.function_arn, key.tenant_id)] += 1
        return stem

    def _put_back(self, key: StemKey, stem: Environment) -> None:
        """A stem taken but not bound returns to its pool, waiting first in line for eviction again."""
        self.stems.add(key, stem)
        if stem.state is EnvState.STEM:
            self._idle[stem] = None
            self._idle.move_to_end(stem, last=False)

    def tend_stems(self, now: float | None = None) -> None:
        """Bring every version's stems to what the stems' share of the memory budget, divided by the recent
        rates of new tenants, gives it: give back what is over, grow what is missing (a version's first
        stem before anyone's second), as far as the host has room and cores free."""
        if self._closed:
            return
        plan = self.stems.plan(self.account.memory_budget_mb, now)
        for vk, known in list(self._stem_specs.items()):
            if (*vk, known.revision_id) not in plan.targets:
                del self._stem_specs[vk]  # the pool forgot the version (quiet, stems given back): so do we
        for key, count in plan.give_back.items():
            for stem in self.stems.surplus(key, count):
                self._forget(cast(Environment, stem))
        growing = sum(1 for task in self._growing if not task.done())
        for key in plan.grow:
            if growing >= self.stems.policy.growing_at_once:
                return
            spec = self._stem_specs.get((key[0], key[1]))
            if spec is not None and spec.revision_id == key[2] and self._grow_stem(spec, key):
                growing += 1

    def _grow_stem(self, spec: FunctionSpec, key: StemKey) -> bool:
        """Start one stem of `key`, if it fits; False if it does not."""
        # Stems never push anything out: they grow only into memory nobody uses, and while one grows it
        # counts at its MemorySize, all its init may use.
        if self._live_memory_mb + spec.memory_mb > self.account.memory_budget_mb:
            return False
        if spec.per_tenant and self._envs_fn[spec.function_arn] >= limits.environment_cap(
            function_limits(spec, self.account), self.account, self._reserved_total()
        ):
            return False
        stem = Environment(
            EnvKey(spec.function_arn, spec.version, None),
            spec,
            self.telemetry,
            stem=True,
            on_exit=self._ended,
            credentials=self.credentials,
            init_timeout_s=self.init_timeout_s,
        )
        if not self.stems.add(key, stem):
            return False
        self._envs_fn[spec.function_arn] += 1
        self._live_memory_mb += stem.charged_mb
        task = asyncio.ensure_future(self._grow(stem, key))
        self._growing.add(task)
        task.add_done_callback(self._growing.discard)
        return True

    async def _grow(self, stem: Environment, key: StemKey) -> None:
        started = time.monotonic()
        ok = False
        try:
            await stem.start(self._backend(stem.spec))
            ok = await stem.prepare()
        except Exception:
            log.exception("a stem of %s could not be grown", stem.spec.function_name)
        seconds = time.monotonic() - started
        if stem.retired and stem.key.tenant_id is None:
            # Given back, or its version retired, as it grew: its end says nothing of the version's init.
            pass
        elif stem.state is EnvState.STEM:
            # A ready stem waits like an idle environment, first in line for eviction, charged at what it
            # holds; the share of the stems counts the next of its version at that too.
            held = stem.idle_memory_mb()
            self.stems.grew(key, seconds, ok, held)
            self._charge(stem, held)
            stem.last_used = time.monotonic()
            self._idle[stem] = None
            self._idle.move_to_end(stem, last=False)
        else:
            self.stems.grew(key, seconds, ok)
            if not ok and stem.state is not EnvState.BUSY:
                # (A stem bound while it grew belongs to its call now, which reports how its init went.)
                self._forget(stem)
        # A core is free again: grow what waited for one.
        asyncio.get_running_loop().call_soon(self.tend_stems)

    def _release(self, env: Environment) -> None:
        if env.alive and not env.retired:
            env.state = EnvState.IDLE
            env.last_used = time.monotonic()
            self._charge(env, env.idle_memory_mb())
            self._idle[env] = None
            self._idle.move_to_end(env)
            # Most recently used last: placement reuses from the end, so warm caches stay warm.
            pool = self._pools.get(env.key)
            if pool is not None and env in pool:
                pool.remove(env)
                pool.append(env)
            return
        self._forget(env)

    # Concurrency: admission and the fair queue.
    def _start(self, key: EnvKey, spec: FunctionSpec, fl: limits.FunctionLimits) -> None:
        self._running_fn[key.function_arn] += 1
        self._running_tenant[(key.function_arn, key.tenant_id)] += 1
        if fl.reserved is None:
            self._running_unreserved += 1
        if spec.per_tenant:
            self._share_cpu(key)

    def _finish(self, key: EnvKey, spec: FunctionSpec, fl: limits.FunctionLimits) -> None:
        self._running_fn[key.function_arn] -= 1
        self._running_tenant[(key.function_arn, key.tenant_id)] -= 1
        if fl.reserved is None:
            self._running_unreserved -= 1
            self._hand_over_slot()
        if spec.per_tenant:
            self._share_cpu(key)

    def _share_cpu(self, key: EnvKey) -> None:
        """A tenant's environments share one weight: each divides its own by the tenant's calls running."""
        divisor = limits.cpu_divisor(self._running_tenant[(key.function_arn, key.tenant_id)])
        if self._cpu_divisors.get(key, 1) == divisor:
            return
        if divisor == 1:
            self._cpu_divisors.pop(key, None)
        else:
            self._cpu_divisors[key] = divisor
        for env in self._pools.get(key, ()):
            env.divide_cpu(divisor)

    def _hand_over_slot(self) -> None:
        """A slot of the shared pool is free: give it to the next waiting tenant, in turn."""
        counts = limits.Counts(self._running_unreserved, self._reserved_total())
        while counts.running_unreserved < self.account.concurrency - counts.reserved_total:
            waiter = self._queue.pop()
            if waiter is None:
                return
            if not waiter.done():
                # The slot is booked for the waiter here, before it resumes, so no newcomer can take it.
                self._running_unreserved += 1
                counts.running_unreserved += 1
                waiter.set_result(None)

    async def _admit(self, key: EnvKey, spec: FunctionSpec, fl: limits.FunctionLimits) -> None:
        counts = limits.Counts(self._running_unreserved, self._reserved_total())
        reason = limits.admit(
            fl,
            self.account,
            counts,
            self._running_fn[key.function_arn],
            self._running_tenant[(key.function_arn, key.tenant_id)],
        )
        if reason is None:
            self._start(key, spec, fl)
            return
        if reason is not limits.Reason.ACCOUNT or self.queue_wait_s <= 0:
            raise _throttle(reason)
        waiter = self._queue.push((key.function_arn, key.tenant_id))
        try:
            await asyncio.wait_for(asyncio.shield(waiter), self.queue_wait_s)
        except TimeoutError:
            if waiter.done() and not waiter.cancelled():
                # Granted just as the wait ran out: the slot is ours, use it.
                pass
            else:
                waiter.cancel()
                raise _throttle(reason) from None
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._running_unreserved -= 1
                self._hand_over_slot()
            waiter.cancel()
            raise
        # The slot of the shared pool was booked by _hand_over_slot; book the rest.
        self._running_unreserved -= 1
        self._start(key, spec, fl)

    async def invoke(self, key: EnvKey, spec: FunctionSpec, inv: Invocation) -> InvocationResult:
        """Run `inv` in an environment of `key`: a warm one of that key if idle, else a new one."""
        backend = self._backend(spec)
        fl = function_limits(spec, self.account)
        try:
            await self._admit(key, spec, fl)
        except errors.TooManyRequestsException as exc:
            self._throttled(spec, key, exc)
            raise
        try:
            hand_backs = HAND_BACKS
            while True:
                try:
                    env, fresh = self._acquire(key, spec, fl)
                except errors.TooManyRequestsException as exc:
                    self._throttled(spec, key, exc)
                    raise
                new_environment = spec.per_tenant and env.invocations == 0
                try:
                    if fresh:
                        try:
                            await env.start(backend)
                        except BaseException:
                            # Half started is dead: it must never be taken for an idle environment.
                            env.kill()
                            raise
                    return await env.invoke(inv, hand_back=hand_backs > 0)
                except EndedBetweenCalls:
                    # Its runtime had ended before it took the call, which never ran: run it in another.
                    hand_backs -= 1
                finally:
                    self._release(env)
                    if new_environment:
                        # Refill the stems once this call is answered, not while it runs: starting an
                        # environment forks the daemon and takes a core, which this call would pay for.
                        asyncio.get_running_loop().call_soon(self.tend_stems)
        finally:
            self._finish(key, spec, fl)

    def _throttled(self, spec: FunctionSpec, key: EnvKey, exc: errors.TooManyRequestsException) -> None:
        if self.telemetry is not None:
            self.telemetry.throttled(spec.function_name, exc.members.get("Reason", ""), key.tenant_id)

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

    def retire(self, function_arn: str, version: str | None = None) -> None:
        """A version of the function changed or is gone (`version` None: all of it): no environment of it
        may serve another call. The environments of the function's other versions stay warm."""
        for stem in self.stems.of_function(function_arn, version):
            self._forget(cast(Environment, stem))
        self.stems.forget(function_arn, version)
        for vk in [vk for vk in self._stem_specs if vk[0] == function_arn and version in (None, vk[1])]:
            del self._stem_specs[vk]
        for key in [k for k in self._pools if k.function_arn == function_arn and version in (None, k.version)]:
            for env in list(self._pools.get(key, [])):
                env.retired = True
                if env.state is not EnvState.BUSY:
                    self._forget(env)

    def reap_idle(self, now: float | None = None) -> int:
        """Retire environments idle for longer than the keep-alive; return how many."""
        now = time.monotonic() if now is None else now
        expired = [env for env in self._idle if now - env.last_used > self.keep_alive_s]
        for env in expired:
            self._forget(env)
        return len(expired)

    def start_reaper(self) -> None:
        async def loop() -> None:
            while True:
                await asyncio.sleep(max(0.5, min(60.0, self.keep_alive_s / 4)))
                self.reap_idle()

        async def tend() -> None:
            while True:
                await asyncio.sleep(STEM_TICK_S)
                self.tend_stems()

        self._reaper = asyncio.ensure_future(loop())
        self._stem_ticker = asyncio.ensure_future(tend())

    async def close(self) -> None:
        """Kill every environment and wait until each is cleaned up."""
        self._closed = True
        for ticker in (self._reaper, self._stem_ticker):
            if ticker is not None:
                ticker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ticker
        for task in list(self._growing):
            task.cancel()
        if self._growing:
            await asyncio.gather(*self._growing, return_exceptions=True)
        for env in list(self.environments()):
            self._forget(env)
        if self._closing:
            results = await asyncio.gather(*self._closing, return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    log.error("an environment could not be cleaned up: %r", result)
        for backend in self.sandboxes.values():
            await backend.close()


def function_limits(spec: FunctionSpec, account: limits.AccountLimits) -> limits.FunctionLimits:
    tenant_concurrency = spec.tenant_max_concurrency
    if tenant_concurrency is None and spec.per_tenant:
        tenant_concurrency = account.default_tenant_concurrency(spec.memory_mb)
    return limits.FunctionLimits(spec.reserved_concurrency, tenant_concurrency, spec.tenant_max_environments)
