"""Constraint violations in the wording of Lambda's request validator.

Lambda checks every member against the service model before anything else and reports all the
failures at once: `2 validation errors detected: Value '0' at 'timeout' failed to satisfy
constraint: ...; Value ...`.
"""

from __future__ import annotations

from silo.errors import ValidationException


def show(value: object) -> str:
    """A value as the validator prints it (Java's toString: lists as `[a, b]`)."""
    if isinstance(value, list | tuple):
        return "[" + ", ".join(show(v) for v in value) + "]"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


class Violations:
    """Collects the failures of one request; `raise_if_any` turns them into one ValidationException."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def __bool__(self) -> bool:
        return bool(self.items)

    def add(self, value: object, member: str, constraint: str) -> None:
        self.items.append(f"Value '{show(value)}' at '{member}' failed to satisfy constraint: {constraint}")

    def add_sensitive(self, member: str, constraint: str) -> None:
        """For sensitive members (environment variables) the validator leaves the value out."""
        self.items.append(f"Value at '{member}' failed to satisfy constraint: {constraint}")

    def error(self) -> ValidationException:
        n = len(self.items)
        noun = "error" if n == 1 else "errors"
        return ValidationException(f"{n} validation {noun} detected: " + "; ".join(self.items))

    def raise_if_any(self) -> None:
        if self.items:
            raise self.error()


def enum_constraint(values: tuple[str, ...] | list[str]) -> str:
    return "Member must satisfy enum value set: [" + ", ".join(values) + "]"
