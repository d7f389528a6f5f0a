"""When credentials are renewed, as pure decisions over their issue and expiry times (epoch seconds).

A credential is renewed once half of its life has passed: what an environment is handed then always has
half of its life left (7.5 minutes at STS's shortest 15), enough for a call that started with it, and a
provider that fails at renewal leaves that half to recover in. Until then every environment of the tenant
is handed the same one, from memory. A credential is not handed out at all in its last seconds: a call
would fail with it before it could use it.
"""

from __future__ import annotations

from dataclasses import dataclass

# Seconds before its expiry past which a credential is no longer handed out, even if renewal failed.
LAST_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class Lease:
    """A credential's life: when it was issued and when it expires."""

    issued_at: float
    expires_at: float

    @property
    def renew_at(self) -> float:
        return self.issued_at + (self.expires_at - self.issued_at) / 2

    def due(self, now: float) -> bool:
        """Whether it is time to renew it."""
        return now >= self.renew_at

    def usable(self, now: float) -> bool:
        """Whether it may still be handed out (renewal failed, and it has not reached its last seconds)."""
        return now < self.expires_at - LAST_SECONDS
