"""Asynchronous invocations: the dispatcher that runs queued events in their tenant's environments.

`Invoke` with `InvocationType: Event` stores the event (silo.store.events) before it answers 202; the
dispatcher takes due events, runs them through the router like any call of that tenant, retries
function errors with backoff, retries throttles without using a retry attempt, and on a final outcome
hands a record to the configured destination function or keeps the event in the dead-letter list.
"""

from silo.store.events import Attempt, EventState, QueuedEvent

__all__ = ["Attempt", "EventState", "QueuedEvent"]
