"""AWS Signature Version 4: the canonical request, the string to sign and the signature, over hmac and hashlib.

One module for both sides: the server verifies with it (`silo.api.auth`) and the `silo` CLI signs with it,
so the two cannot drift apart. It follows botocore's rules for services other than S3, the ones boto3 and
the AWS CLI sign Lambda's requests with:

- the canonical URI is the path *as it arrived* (a function's ARN is already percent-encoded once), with
  dot segments and repeated slashes removed, percent-encoded again (`/` and `~` kept): SigV4 encodes a
  path twice for every service but S3;
- the canonical query is each `name=value` pair as it arrived, sorted by name then value (the signature
  itself left out of a presigned URL's), which is what botocore signs for a URL's query; a signer that
  canonicalises by the specification instead (each name and value decoded and encoded again with only
  RFC 3986's unreserved characters kept) gets the same string whenever its query went on the wire in that
  encoding, and `canonical_query(..., reencode=True)` gives the other form for the rest;
- the canonical headers are the signed ones only, names in lower case, sorted, each value's runs of
  white space made one space and its ends trimmed, repeated headers joined with commas;
- the payload hash is the SHA-256 of the body, which the verifier computes itself: a client's
  `X-Amz-Content-SHA256` is never taken for it.

This is a short piece written here rather than a library: no maintained package verifies SigV4 for a
server (botocore signs only, and is no dependency of the server), and the whole algorithm is the few
HMACs below. Signatures are compared in constant time (`hmac.compare_digest`).
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import time
from dataclasses import dataclass
from urllib.parse import quote, unquote_to_bytes

ALGORITHM = "AWS4-HMAC-SHA256"
TERMINATOR = "aws4_request"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
# Query parameters of a presigned URL (SigV4 in the query string).
Q_ALGORITHM = "X-Amz-Algorithm"
Q_CREDENTIAL = "X-Amz-Credential"
Q_DATE = "X-Amz-Date"
Q_EXPIRES = "X-Amz-Expires"
Q_SIGNED_HEADERS = "X-Amz-SignedHeaders"
Q_SIGNATURE = "X-Amz-Signature"
_UNRESERVED = "-_.~"


def remove_dot_segments(path: str) -> str:
    """RFC 3986's dot-segment removal, with repeated slashes made one, as AWS normalises paths."""
    if "//" not in path and "/." not in path:
        return path or "/"
    segments: list[str] = []
    for part in path.split("/"):
        if part == "..":
            if segments:
                segments.pop()
        elif part and part != ".":
            segments.append(part)
    lead = "/" if path.startswith("/") else ""
    trail = "/" if path.endswith("/") and segments else ""
    return (lead + "/".join(segments) + trail) or "/"


def canonical_uri(raw_path: str) -> str:
    """The path as received (percent-encoded once), normalised and encoded again."""
    uri = _URIS.get(raw_path)
    if uri is None:
        # Calls come to a few paths again and again (a function's Invoke): each is worked out once.
        if len(_URIS) >= 4096:
            _URIS.clear()
        uri = _URIS[raw_path] = quote(remove_dot_segments(raw_path), safe="/~")
    return uri


_URIS: dict[str, str] = {}


def canonical_query(raw_query: str, *, drop_signature: bool = False, reencode: bool = False) -> str:
    """The query's pairs as received, sorted; with `reencode`, each name and value decoded and encoded again
    first (the two differ only for a query not sent in the canonical encoding, e.g. a bare comma)."""
    if not raw_query:
        return ""
    pairs: list[tuple[str, str]] = []
    for pair in raw_query.split("&"):
        name, _, value = pair.partition("=")
        if reencode:
            name = quote(unquote_to_bytes(name), safe=_UNRESERVED)
            value = quote(unquote_to_bytes(value), safe=_UNRESERVED)
        if drop_signature and name == Q_SIGNATURE:
            continue
        pairs.append((name, value))
    pairs.sort()
    return "&".join(f"{name}={value}" for name, value in pairs)


def header_value(value: str) -> str:
    """The value with its ends trimmed and each run of white space made one space."""
    if value.isascii() and value.isprintable() and " " not in value:
        return value  # the usual case: printable ASCII has no white space but the space, so nothing to do
    return " ".join(value.split())


def canonical_request(
    method: str,
    raw_path: str,
    raw_query: str,
    headers: dict[str, list[str]],
    signed: list[str],
    payload_sha256: str,
    *,
    presigned: bool = False,
    reencode: bool = False,
) -> str:
    """The canonical request over the `signed` header names (lower case, sorted). `headers` maps each lower-case
    name to its values in the order received; a signed name missing from it counts as an empty value."""
    lines = []
    for name in signed:
        values = headers.get(name, ())
        if len(values) == 1:
            lines.append(f"{name}:{header_value(values[0])}")
        else:
            lines.append(f"{name}:{','.join(header_value(v) for v in values)}")
    return "\n".join(
        (
            method.upper(),
            canonical_uri(raw_path),
            canonical_query(raw_query, drop_signature=presigned, reencode=reencode),
            "\n".join(lines) + "\n",
            ";".join(signed),
            payload_sha256,
        )
    )


def credential_scope(date: str, region: str, service: str) -> str:
    return f"{date}/{region}/{service}/{TERMINATOR}"


def string_to_sign(amz_date: str, scope: str, canonical: str) -> str:
    return "\n".join((ALGORITHM, amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()))


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    """The key a day's signatures in one region and service are made with. Callers may cache it per
    (secret, date, region, service): it is what every request of that day costs four HMACs to derive."""
    key = hmac.digest(f"AWS4{secret}".encode(), date.encode(), "sha256")
    key = hmac.digest(key, region.encode(), "sha256")
    key = hmac.digest(key, service.encode(), "sha256")
    return hmac.digest(key, TERMINATOR.encode(), "sha256")


def signature(key: bytes, to_sign: str) -> str:
    return hmac.digest(key, to_sign.encode(), "sha256").hex()


def same_signature(expected: str, given: str) -> bool:
    """Whether two signatures are equal, in time that does not depend on where they differ."""
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace"))


def amz_date(epoch_s: float) -> str:
    """`20260102T030405Z`, the form of X-Amz-Date."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(epoch_s))


def parse_amz_date(value: str) -> float | None:
    """Epoch seconds of an X-Amz-Date value (`YYYYMMDDTHHMMSSZ`), None when it is not one."""
    if len(value) != 16 or value[8] != "T" or value[15] != "Z" or not (value[:8] + value[9:15]).isdigit():
        return None
    try:
        fields = (
            int(value[0:4]),
            int(value[4:6]),
            int(value[6:8]),
            int(value[9:11]),
            int(value[11:13]),
            int(value[13:15]),
        )
    except ValueError:  # pragma: no cover - isdigit() took care of it
        return None
    year, month, day, hour, minute, second = fields
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour <= 23 and minute <= 59 and second <= 60):
        return None
    # Every request of a day shares its date: its midnight is worked out once (timegm is most of the cost).
    midnight = _MIDNIGHTS.get(value[:8])
    if midnight is None:
        if len(_MIDNIGHTS) > 64:
            _MIDNIGHTS.clear()
        midnight = _MIDNIGHTS[value[:8]] = float(calendar.timegm((year, month, day, 0, 0, 0, 0, 0, 0)))
    return midnight + hour * 3600 + minute * 60 + second


_MIDNIGHTS: dict[str, float] = {}


@dataclass(frozen=True, slots=True)
class Authorization:
    """What an `Authorization: AWS4-HMAC-SHA256 ...` header (or a presigned URL's query) says."""

    access_key: str
    date: str  # the scope's YYYYMMDD
    region: str
    service: str
    terminator: str
    signed_headers: list[str]
    signature: str

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/{self.terminator}"


class Malformed(ValueError):
    """The authorization is not SigV4 as AWS reads it; the message says what is missing."""


def parse_credential(credential: str) -> tuple[str, str, str, str, str]:
    parts = credential.split("/")
    if len(parts) != 5 or not all(parts):
        raise Malformed(
            f"Credential should be of the form ACCESS_KEY_ID/YYYYMMDD/REGION/SERVICE/aws4_request, got '{credential}'."
        )
    return parts[0], parts[1], parts[2], parts[3], parts[4]


def parse_authorization(value: str) -> Authorization:
    """Parse `AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...`."""
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise Malformed(f"Unsupported authorization type '{algorithm}': silo takes {ALGORITHM} (SigV4) only.")
    fields: dict[str, str] = {}
    for part in rest.split(","):
        name, eq, field_value = part.strip().partition("=")
        if not eq:
            raise Malformed(
                f"Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' as name=value "
                f"pairs; '{part.strip()}' is none."
            )
        fields[name] = field_value
    for name in ("Credential", "SignedHeaders", "Signature"):
        if not fields.get(name):
            raise Malformed(f"Authorization header requires '{name}' parameter.")
    access_key, date, region, service, terminator = parse_credential(fields["Credential"])
    return Authorization(
        access_key, date, region, service, terminator, fields["SignedHeaders"].split(";"), fields["Signature"]
    )


def sign_headers(
    *,
    access_key: str,
    secret: str,
    method: str,
    host: str,
    raw_path: str,
    raw_query: str,
    headers: dict[str, str],
    body: bytes,
    region: str,
    service: str = "lambda",
    now: float | None = None,
) -> dict[str, str]:
    """The headers to add to a request so that it is signed: X-Amz-Date and Authorization. `raw_path` and
    `raw_query` are as they go on the wire (percent-encoded); every header given, and Host, is signed."""
    stamp = amz_date(time.time() if now is None else now)
    all_headers = {name.lower(): [value] for name, value in headers.items()}
    all_headers["host"] = [host]
    all_headers["x-amz-date"] = [stamp]
    signed = sorted(all_headers)
    scope = credential_scope(stamp[:8], region, service)
    canonical = canonical_request(method, raw_path, raw_query, all_headers, signed, hashlib.sha256(body).hexdigest())
    sig = signature(signing_key(secret, stamp[:8], region, service), string_to_sign(stamp, scope, canonical))
    return {
        "X-Amz-Date": stamp,
        "Authorization": f"{ALGORITHM} Credential={access_key}/{scope}, SignedHeaders={';'.join(signed)}, "
        f"Signature={sig}",
    }


def presign_query(
    *,
    access_key: str,
    secret: str,
    method: str,
    host: str,
    raw_path: str,
    region: str,
    expires_s: int,
    service: str = "lambda",
    now: float | None = None,
) -> str:
    """The query string of a presigned URL for a request with no body and no query of its own, signed
    over Host alone, valid for `expires_s` seconds."""
    stamp = amz_date(time.time() if now is None else now)
    scope = credential_scope(stamp[:8], region, service)
    params = {
        Q_ALGORITHM: ALGORITHM,
        Q_CREDENTIAL: f"{access_key}/{scope}",
        Q_DATE: stamp,
        Q_EXPIRES: str(expires_s),
        Q_SIGNED_HEADERS: "host",
    }
    query = "&".join(f"{name}={quote(value, safe=_UNRESERVED)}" for name, value in sorted(params.items()))
    canonical = canonical_request(method, raw_path, query, {"host": [host]}, ["host"], EMPTY_SHA256)
    sig = signature(signing_key(secret, stamp[:8], region, service), string_to_sign(stamp, scope, canonical))
    return f"{query}&{Q_SIGNATURE}={sig}"
