"""The PostgreSQL login roles of a (function, tenant): deterministic, legal names, and different for
different pairs.

PostgreSQL cuts a name past 63 bytes silently (NAMEDATALEN - 1), so that two long names would be one
role. A tenant id is up to 256 characters and a function's ARN more. The name is `silo_`, a readable part
(the tenant id with each character but a-z, 0-9 and `_` made `_`, cut to 31 characters), `_`, 24 hex
digits (96 bits) of the SHA-256 of the function's ARN and the tenant id, and the slot, `_a` or `_b`: two
pairs share a role only if their digests share 96 bits, and `pg_stat_activity` still shows which tenant
connects at a glance. The same pair always gets the same two roles, so their grants, their rows in the
mapping table and their connections are one identity across renewals and restarts of silo.

Two, because a PostgreSQL role has one password: renewing it would lock out every connection an
environment opens with the password it was handed before. So renewals take turns: each sets a new
password on the slot not handed out last, and the other keeps working until its own VALID UNTIL, at least
half a life later (silo.credentials.postgres).
"""

from __future__ import annotations

import hashlib
import re

MAX_BYTES = 63
PREFIX = "silo_"
DIGEST_HEX = 24
SLOTS = ("a", "b")
READABLE_CHARS = MAX_BYTES - len(PREFIX) - 1 - DIGEST_HEX - 2
_REFUSED = re.compile(r"[^a-z0-9_]")


def role_names(function_arn: str, tenant_id: str) -> tuple[str, str]:
    """The two login roles of `tenant_id`'s environments of the function `function_arn` (unqualified)."""
    readable = _REFUSED.sub("_", tenant_id.lower())[:READABLE_CHARS]
    # A NUL cannot be in either, so the pair has one encoding.
    digest = hashlib.sha256(f"{function_arn}\0{tenant_id}".encode()).hexdigest()[:DIGEST_HEX]
    first, second = (f"{PREFIX}{readable}_{digest}_{slot}" for slot in SLOTS)
    return first, second
