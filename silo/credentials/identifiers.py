"""The PostgreSQL login role of a (function, tenant): deterministic, a legal name, and different for
different pairs.

PostgreSQL cuts a name past 63 bytes silently (NAMEDATALEN - 1), so that two long names would be one
role. A tenant id is up to 256 characters and a function's ARN more. The name is `silo_`, a readable part
(the tenant id with each character but a-z, 0-9 and `_` made `_`, cut to 33 characters), `_`, and 24 hex
digits (96 bits) of the SHA-256 of the function's ARN and the tenant id: two pairs share a role only if
their digests share 96 bits, and `pg_stat_activity` still shows which tenant connects at a glance. The
same pair always gets the same role, so its grants, its row in the mapping table and its connections are
one identity across renewals and restarts of silo.
"""

from __future__ import annotations

import hashlib
import re

MAX_BYTES = 63
PREFIX = "silo_"
DIGEST_HEX = 24
READABLE_CHARS = MAX_BYTES - len(PREFIX) - 1 - DIGEST_HEX
_REFUSED = re.compile(r"[^a-z0-9_]")


def role_name(function_arn: str, tenant_id: str) -> str:
    """The login role of `tenant_id`'s environments of the function `function_arn` (unqualified)."""
    readable = _REFUSED.sub("_", tenant_id.lower())[:READABLE_CHARS]
    # A NUL cannot be in either, so the pair has one encoding.
    digest = hashlib.sha256(f"{function_arn}\0{tenant_id}".encode()).hexdigest()[:DIGEST_HEX]
    return f"{PREFIX}{readable}_{digest}"
