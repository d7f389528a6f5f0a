"""The STS role session name of a tenant: deterministic, within STS's pattern and 64 characters, and
different for different tenants.

AssumeRole's RoleSessionName is 2 to 64 characters of `[\\w+=,.@-]`; a tenant id is up to 256 characters,
some of which (space, `:`, `/`) are not allowed. The name is a readable part (the tenant id with each
character STS refuses made `-`, cut to 39 characters), a dot, and 24 hex digits (96 bits) of the SHA-256
of the whole tenant id: two tenants share a name only if their ids' digests share 96 bits, and CloudTrail
still shows which tenant a session is at a glance. The same tenant always gets the same name, so its
sessions are one identity in the logs of every service it calls.
"""

from __future__ import annotations

import hashlib
import re

MAX_CHARS = 64
DIGEST_HEX = 24
READABLE_CHARS = MAX_CHARS - DIGEST_HEX - 1
ALLOWED = re.compile(r"[\w+=,.@-]{2,64}", re.ASCII)
_REFUSED = re.compile(r"[^\w+=,.@-]", re.ASCII)


def session_name(tenant_id: str) -> str:
    """The RoleSessionName of `tenant_id`'s sessions."""
    readable = _REFUSED.sub("-", tenant_id)[:READABLE_CHARS]
    digest = hashlib.sha256(tenant_id.encode()).hexdigest()[:DIGEST_HEX]
    return f"{readable}.{digest}"
