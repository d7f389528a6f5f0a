"""Reserved concurrency: Put, Get and DeleteFunctionConcurrency, within the account's limit less the
unreserved minimum Lambda keeps.

A mixin of FunctionService, like silo.control.aliasing: it shares the service's lock and the helpers
named under TYPE_CHECKING below.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from silo.control.names import parse_function_name
from silo.errors import InvalidParameterValueException
from silo.store.functions import FunctionRecord

# Lambda keeps this much of the account's concurrency unreserved.
MIN_UNRESERVED = 100


class ConcurrencyOperations:
    """Concurrency reserved for one function, out of the account's."""

    concurrency_limit: int
    _write_lock: threading.RLock

    if TYPE_CHECKING:

        def _unqualified(self, function_name: str) -> FunctionRecord: ...

        def _set_function_member(self, current: FunctionRecord, key: str, value: Any) -> None: ...

        def reserved_total(self) -> int: ...

    def put_function_concurrency(self, function_name: str, body: dict[str, Any]) -> dict[str, int]:
        """PutFunctionConcurrency: reserve concurrency for a function (0 stops it from running)."""
        ref = parse_function_name(function_name, namespaced=True)
        if ref.qualifier is not None:
            raise InvalidParameterValueException(
                "This operation is permitted on Lambda functions only. Aliases and versions do not support this "
                "operation. Please specify either a function name or an unqualified function ARN."
            )
        wanted = body.get("ReservedConcurrentExecutions")
        if isinstance(wanted, bool) or not isinstance(wanted, int) or wanted < 0:
            raise InvalidParameterValueException(
                "1 validation error detected: Value at 'reservedConcurrentExecutions' failed to satisfy constraint: "
                "Member must have value greater than or equal to 0"
            )
        with self._write_lock:
            current = self._unqualified(function_name)
            others = self.reserved_total() - (current.config.get("ReservedConcurrentExecutions") or 0)
            if self.concurrency_limit - others - wanted < MIN_UNRESERVED:
                raise InvalidParameterValueException(
                    "Specified ReservedConcurrentExecutions for function decreases account's "
                    f"UnreservedConcurrentExecution below its minimum value of [{MIN_UNRESERVED}]."
                )
            self._set_reserved(current, wanted)
        return {"ReservedConcurrentExecutions": wanted}

    def get_function_concurrency(self, function_name: str) -> dict[str, int]:
        """GetFunctionConcurrency: `{}` when nothing is reserved."""
        config = self._unqualified(function_name).config
        if "ReservedConcurrentExecutions" not in config:
            return {}
        return {"ReservedConcurrentExecutions": config["ReservedConcurrentExecutions"]}

    def delete_function_concurrency(self, function_name: str) -> None:
        """DeleteFunctionConcurrency: the function goes back to the account's unreserved pool."""
        with self._write_lock:
            self._set_reserved(self._unqualified(function_name), None)

    def _set_reserved(self, current: FunctionRecord, reserved: int | None) -> None:
        # Reserving concurrency changes no code or configuration the environments run, so the revision
        # stays and no environment is retired; the router reads the new limit on the next call.
        self._set_function_member(current, "ReservedConcurrentExecutions", reserved)
