"""The failure of a credentials provider, told twice: for the operator's log and for the function's caller."""

from __future__ import annotations


class ProviderError(Exception):
    """A provider could not give a tenant its credentials. `str()` is for the operator's log (what failed and
    what to do); `public` for the function's caller, and names nothing of the host."""

    def __init__(self, operator: str, public: str) -> None:
        super().__init__(operator)
        self.public = public
