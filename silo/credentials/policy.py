"""The STS provider's session policy: the `SessionPolicy` template of a function's `Credentials` setting with
`${TenantId}` replaced by the tenant's id, within what AssumeRole accepts.

AssumeRole takes an inline session policy of at most 2,048 characters of plain text, drawn from tab, line
feed, carriage return and U+0020 to U+00FF; STS also packs it with the session tags into a binary form whose
own limit it checks itself (PackedPolicyTooLarge). silo checks the plain-text limit when the setting is
given, with the longest tenant id Invoke accepts in every `${TenantId}`, so that no tenant's call can find
its policy too long.
"""

from __future__ import annotations

import json
import re

from silo.types import TENANT_ID_MAX

PLACEHOLDER = "${TenantId}"
MAX_CHARS = 2048
CHARACTERS = re.compile(r"[\t\n\r\u0020-\u00ff]*")
# The longest tenant id Invoke accepts, of characters that stay one character in JSON.
LONGEST_TENANT = "a" * TENANT_ID_MAX


def render(template: str, tenant_id: str) -> str:
    """The session policy of `tenant_id`. A tenant id has neither quote nor backslash (Invoke's pattern), so it
    stands in a JSON string as it is; it is escaped all the same, should that pattern ever widen."""
    return template.replace(PLACEHOLDER, json.dumps(tenant_id)[1:-1])


def longest(template: str) -> int:
    """The length of the longest policy `template` can give, whatever the tenant."""
    return len(render(template, LONGEST_TENANT))
