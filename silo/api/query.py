"""Whole numbers in query strings: written in ASCII digits, and within what the store can hold."""

from __future__ import annotations

# Positions (cursors, markers) and times end up as SQLite integers, which are 64-bit signed: a larger
# Python int fails the query itself.
SQL_INT_MAX = (1 << 63) - 1


def whole_number(raw: str) -> int | None:
    """`raw` as a number when it is written in ASCII digits only, else None.

    `str.isdigit` alone is not enough: it also holds for `²` and `①`, which `int` refuses.
    """
    return int(raw) if raw.isascii() and raw.isdigit() else None


def position(raw: str) -> int | None:
    """A cursor or marker the store could have handed out: a whole number it can hold, else None."""
    number = whole_number(raw)
    return number if number is not None and number <= SQL_INT_MAX else None
