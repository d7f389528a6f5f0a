"""The dispatcher: one asyncio task that runs due events through the router, at most N at a time.

Each event runs with the same request id on every attempt (as on Lambda) and in its own tenant's
environments (`EnvKey(function, version, tenant)`), so it warms and reuses the same environments as
that tenant's synchronous calls. The database is touched only from worker threads, so a slow write
never stalls the event loop that also serves synchronous calls; at most `max_in_flight` events run at
once, so async work cannot take all of the concurrency either.

Crash safety: an event is marked RUNNING, with this server's boot id and a new attempt row, before it
is handed over; on start, events a previous server left RUNNING go back to PENDING (at least once for
events in flight). An event that reached a final state is never taken again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from silo import errors, ids
from silo.control.event_config import AsyncPolicy
from silo.events import policy as decide
from silo.events.policy import Condition, Step
from silo.events.records import destination_record
from silo.store.events import (
    Attempt,
    EventQueue,
    EventState,
    NewEvent,
    QueuedEvent,
    Settlement,
)
from silo.types import EnvKey, FunctionSpec, Invocation, InvocationResult

log = logging.getLogger(__name__)

PRUNE_EVERY_S = 60.0
DETAIL_MAX = 300


class FunctionResolver(Protocol):
    def resolve(self, function_name: str, qualifier: str | None, tenant_id: str | None = None) -> FunctionSpec: ...


class PolicySource(Protocol):
    def policy(self, function_name: str, qualifier: str | None) -> AsyncPolicy: ...


class Invoker(Protocol):
    async def invoke(self, key: EnvKey, spec: FunctionSpec, inv: Invocation) -> InvocationResult: ...


@dataclass(frozen=True, slots=True)
class DispatchSettings:
    max_in_flight: int = 64
    retry_base_s: float = 60.0  # Lambda waits about a minute before the first retry
    retention_s: float = 86400.0  # how long events that ended well stay readable
    poll_s: float = 1.0  # the longest the loop sleeps without looking at the queue


def _qualified(spec: FunctionSpec, qualifier: str | None) -> str:
    # An unqualified ARN has 6 colons; Lambda's records always name the qualifier.
    return (
        spec.function_arn if spec.function_arn.count(":") >= 7 else f"{spec.function_arn}:{qualifier or spec.version}"
    )


def _error_summary(payload: bytes) -> str | None:
    """`errorType: errorMessage` of a function error payload, short enough to keep with each attempt."""
    try:
        body = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(body, dict) or not isinstance(body.get("errorType"), str):
        return None
    message = body.get("errorMessage")
    if not isinstance(message, str) or not message:
        return str(body["errorType"])
    return f"{body['errorType']}: {message[:DETAIL_MAX]}"


class Dispatcher:
    """Runs queued events; also the read side of the queue for silo's API (events, dead letters, replay)."""

    def __init__(
        self,
        queue: EventQueue,
        functions: FunctionResolver,
        policies: PolicySource,
        router: Invoker,
        settings: DispatchSettings | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.queue = queue
        self.functions = functions
        self.policies = policies
        self.router = router
        self.settings = settings or DispatchSettings()
        self.clock = clock
        self.boot_id = uuid.uuid4().hex
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None

    # -- the way in -------------------------------------------------------------------------------

    async def accept(
        self,
        *,
        request_id: str,
        function_name: str,
        qualifier: str | None,
        tenant_id: str | None,
        payload: bytes,
        caller_key: str | None = None,
    ) -> None:
        """Store an event durably (committed on return), then wake the loop. Invoke answers 202 after this.
        `caller_key` is the id of the key that sent it, kept with the event."""
        event = NewEvent(request_id, function_name, qualifier, tenant_id, payload, self.clock(), caller_key=caller_key)
        await asyncio.to_thread(self.queue.enqueue, event)
        self._wake.set()

    def function_removed(self, function_name: str) -> int:
        """The function is gone: its pending events move to the dead-letter list, where they can be read
        and, once a function of that name exists again, replayed. Blocking; call it from a worker thread."""
        moved = self.queue.dead_letter_pending(function_name, self.clock(), Condition.FUNCTION_DELETED.value)
        if moved:
            log.info("function %s was deleted: %d pending event(s) moved to its dead-letter list", function_name, moved)
        return moved

    # -- the loop ---------------------------------------------------------------------------------

    def start(self) -> None:
        self._loop_task = asyncio.ensure_future(self.run())

    async def run(self) -> None:
        """Recover what a previous server left running, then dispatch due events until cancelled."""
        recovered = await asyncio.to_thread(self.queue.recover, self.boot_id, self.clock())
        if recovered:
            log.info("%d event(s) were in flight when silo last stopped; they run again", recovered)
        next_prune = 0.0
        while True:
            self._wake.clear()
            now = self.clock()
            if now >= next_prune:
                await asyncio.to_thread(self.queue.prune, now - self.settings.retention_s)
                next_prune = now + PRUNE_EVERY_S
            free = max(0, self.settings.max_in_flight - len(self._tasks))
            batch, next_due = await asyncio.to_thread(self.queue.claim_due, self.boot_id, now, free)
            for event in batch:
                task = asyncio.ensure_future(self._process(event))
                self._tasks.add(task)
                task.add_done_callback(self._done)
            if len(batch) >= free or next_due is None:
                # Every slot is taken (a finishing task wakes us) or nothing is pending (accept wakes us).
                timeout = self.settings.poll_s
            else:
                timeout = min(max(0.0, next_due - self.clock()), self.settings.poll_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._wake.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("an async event could not be settled", exc_info=task.exception())

    async def stop(self) -> None:
        """Stop dispatching; events in flight go back to PENDING and run again on the next start."""
        pending = {t for t in (self._loop_task, *self._tasks) if t is not None}
        while pending:
            # Again until they end: Python 3.11's wait_for can swallow a cancellation that arrives as the
            # awaited future completes, and the loop would then go on forever.
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=1)
        released = await asyncio.to_thread(self.queue.release, self.boot_id, self.clock())
        if released:
            log.info("%d async event(s) were in flight at shutdown; they run again on the next start", released)

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    # -- one attempt ------------------------------------------------------------------------------

    async def _process(self, ev: QueuedEvent) -> None:
        try:
            settlement = await self._attempt(ev)
        except errors.LambdaError as exc:
            settlement = await self._defer(ev, "unavailable", f"{exc.code}: {exc.message}")
        except Exception as exc:  # a bug of ours must not lose the event: it is retried like a throttle
            log.exception("async event %s failed inside silo", ev.request_id)
            settlement = await self._defer(ev, "unavailable", f"{type(exc).__name__}: {exc}")
        if not await asyncio.to_thread(self.queue.settle, self.boot_id, self.clock(), settlement):
            log.warning("async event %s was no longer this server's to settle", ev.request_id)

    async def _attempt(self, ev: QueuedEvent) -> Settlement:
        assert ev.attempt_id is not None  # claim_due opened it
        try:
            spec = self.functions.resolve(ev.function_name, ev.qualifier, ev.tenant_id)
        except errors.ResourceNotFoundException as exc:
            return self._dead(ev, Condition.FUNCTION_DELETED, exc.message)
        policy = await asyncio.to_thread(self.policies.policy, ev.function_name, ev.qualifier)
        if decide.expired(self.clock(), ev.enqueued_at, policy.max_age_s):
            return await self._final(ev, spec, policy, Condition.EVENT_AGE_EXCEEDED, "skipped", "too old to run")
        if spec.per_tenant != (ev.tenant_id is not None):
            return self._dead(ev, Condition.TENANT_MISMATCH, "the function's tenant isolation mode no longer fits")
        # The ARN as invoked: qualified when the call named a version or an alias.
        invoked = spec.function_arn if ev.qualifier is None else f"{spec.function_arn}:{ev.qualifier}"
        inv = Invocation(
            request_id=ev.request_id,
            payload=ev.payload,
            tenant_id=ev.tenant_id,
            invoked_arn=invoked,
            caller_key=ev.caller_key,
        )
        try:
            result = await self.router.invoke(EnvKey(spec.function_arn, spec.version, ev.tenant_id), spec, inv)
        except errors.TooManyRequestsException as exc:
            return await self._defer(ev, "throttled", exc.members.get("Reason"), policy)
        except errors.PlatformError as exc:
            # silo failed, not the function: Lambda's retry attempts count the function's errors only, so
            # the event runs again later, with all of them, once the platform is back.
            log.warning("async event %s of %s waits: %s", ev.request_id, ev.function_name, exc.message)
            return await self._defer(ev, "unavailable", f"{exc.code}: {exc.message}", policy)
        failed = result.function_error is not None
        runs = ev.runs + 1
        step = decide.after_run(
            runs, failed, self.clock(), ev.enqueued_at, policy.max_retries, policy.max_age_s, self.settings.retry_base_s
        )
        response = result.payload
        function_error = None if result.function_error is None else result.function_error.value
        outcome, detail = ("error", _error_summary(response)) if failed else ("success", None)
        if step.condition is None:
            assert step.retry_at is not None
            return Settlement(
                ev.request_id,
                ev.attempt_id,
                outcome,
                detail,
                True,
                EventState.PENDING,
                step.retry_at,
                response=response,
                function_error=function_error,
                executed_version=result.executed_version,
            )
        return await self._final(
            ev,
            spec,
            policy,
            step.condition,
            outcome,
            detail,
            runs=runs,
            response=response,
            function_error=function_error,
            executed_version=result.executed_version,
        )

    async def _defer(
        self, ev: QueuedEvent, outcome: str, detail: str | None, policy: AsyncPolicy | None = None
    ) -> Settlement:
        """The router refused the hand-over: try again later without using a retry attempt."""
        assert ev.attempt_id is not None
        if policy is None:
            policy = await asyncio.to_thread(self.policies.policy, ev.function_name, ev.qualifier)
        step: Step = decide.after_deferral(
            ev.throttles + 1, self.clock(), ev.enqueued_at, policy.max_age_s, self.settings.retry_base_s
        )
        if step.condition is None:
            return Settlement(ev.request_id, ev.attempt_id, outcome, detail, False, EventState.PENDING, step.retry_at)
        spec = None
        with contextlib.suppress(errors.LambdaError):
            spec = self.functions.resolve(ev.function_name, ev.qualifier)
        return await self._final(ev, spec, policy, step.condition, outcome, detail)

    def _dead(self, ev: QueuedEvent, condition: Condition, detail: str) -> Settlement:
        assert ev.attempt_id is not None
        return Settlement(
            ev.request_id, ev.attempt_id, "skipped", detail, False, EventState.DEAD, condition=condition.value
        )

    async def _final(
        self,
        ev: QueuedEvent,
        spec: FunctionSpec | None,
        policy: AsyncPolicy,
        condition: Condition,
        outcome: str,
        detail: str | None,
        *,
        runs: int | None = None,
        response: bytes | None = None,
        function_error: str | None = None,
        executed_version: str | None = None,
    ) -> Settlement:
        """The event is done: hand its record to the destination for this outcome, if any.

        A failed event whose on-failure destination cannot be found is kept as a dead letter instead:
        a record nobody will ever read is as good as lost.
        """
        assert ev.attempt_id is not None
        ran = runs is not None
        if runs is None:  # decided without running now: report the last run there was, if any
            runs, response, function_error, executed_version = (
                ev.runs,
                ev.response,
                ev.function_error,
                ev.executed_version,
            )
        success = condition is Condition.SUCCESS
        target = policy.on_success if success else policy.on_failure
        destination = None
        if target is not None and spec is not None:
            record = destination_record(
                ev,
                _qualified(spec, ev.qualifier),
                condition.value,
                runs,
                response,
                function_error,
                executed_version,
                self.clock(),
            )
            destination = self._destination_event(target, ev, record)
        if success:
            state = EventState.SUCCEEDED
            if target is not None and destination is None:
                log.warning("event %s succeeded; its OnSuccess destination %s is gone", ev.request_id, target)
        elif destination is not None:
            state = EventState.FAILED
        else:
            state = EventState.DEAD
            if target is not None:
                detail = f"{detail}; the OnFailure destination {target} could not be found"
        return Settlement(
            ev.request_id,
            ev.attempt_id,
            outcome,
            detail,
            ran,
            state,
            condition=condition.value,
            response=response if ran else None,
            function_error=function_error if ran else None,
            executed_version=executed_version if ran else None,
            destination=destination,
        )

    def _destination_event(self, arn: str, ev: QueuedEvent, record: bytes) -> NewEvent | None:
        """The record as a new event of the destination function, or None if that function is gone."""
        try:
            target = self.functions.resolve(arn, None)
        except errors.LambdaError:
            return None
        # The tenant travels on only to a tenant-isolated destination; the record names it for the others.
        tenant = ev.tenant_id if target.per_tenant else None
        if target.per_tenant and tenant is None:
            return None
        qualifier = arn.split(":")[7] if arn.count(":") >= 7 else None
        return NewEvent(ids.request_id(), target.function_name, qualifier, tenant, record, self.clock())

    # -- the read side, for silo's API --------------------------------------------------------------

    async def event(self, function_name: str, request_id: str) -> tuple[QueuedEvent, list[Attempt]]:
        """One event of a function and every attempt at it."""
        ev = await asyncio.to_thread(self.queue.get, request_id)
        if ev is None or ev.function_name != function_name:
            raise errors.ResourceNotFoundException(
                f"No asynchronous invocation {request_id} of function {function_name} is known to silo "
                "(events that ended well are kept for a day)."
            )
        return ev, await asyncio.to_thread(self.queue.attempts, request_id)

    async def events(
        self, function_name: str, states: tuple[EventState, ...], after_seq: int | None, limit: int
    ) -> list[QueuedEvent]:
        return await asyncio.to_thread(self.queue.list_events, function_name, states, after_seq, limit)

    async def replay(self, function_name: str, request_id: str) -> str:
        """Queue a dead letter again as a new event (new request id, fresh age); returns that request id."""
        old = await asyncio.to_thread(self.queue.get, request_id)
        if old is None or old.function_name != function_name:
            raise errors.ResourceNotFoundException(
                f"Function {function_name} has no dead letter with request id {request_id}."
            )
        # The function must exist again (a dead letter may outlive its function) and accept the tenant.
        spec = self.functions.resolve(function_name, old.qualifier)
        if spec.per_tenant != (old.tenant_id is not None):
            raise errors.InvalidParameterValueException(
                f"Dead letter {request_id} has {'tenant ' + old.tenant_id if old.tenant_id else 'no tenant'}, which "
                f"function {function_name} no longer accepts (its tenant isolation mode differs)."
            )
        new = NewEvent(
            ids.request_id(), function_name, old.qualifier, old.tenant_id, old.payload, self.clock(), request_id
        )
        before = await asyncio.to_thread(self.queue.replay, function_name, request_id, new)
        if before is None:
            raise errors.ResourceNotFoundException(
                f"Function {function_name} has no dead letter with request id {request_id}."
            )
        if before.state is EventState.REPLAYED:
            raise errors.ResourceConflictException(
                f"Dead letter {request_id} was already replayed as {before.replayed_as}."
            )
        if before.state is not EventState.DEAD:
            raise errors.ResourceConflictException(
                f"Event {request_id} is {before.state.value}, not a dead letter; only dead letters can be replayed."
            )
        self._wake.set()
        return new.request_id
