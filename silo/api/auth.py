"""The authentication layer: every request proves which caller key sent it, with AWS Signature Version 4.

It wraps the whole application, the hot Invoke endpoint included (which bypasses Starlette), so no route
can be reached around it. For each request it:

1. reads the `Authorization` header (or a presigned URL's query) and finds the key it names among the
   active ones (`silo.control.keys`, held in memory: no database read per request);
2. checks the credential scope (the request's date, this server's region, the service `lambda`) and that
   the request's date is within 5 minutes of the server's clock;
3. reads the body (under the route's size limit) and hashes it itself: a client's X-Amz-Content-SHA256 is
   never taken for the body's hash;
4. recomputes the signature over the method, the raw path and query as received, the signed headers only
   (Host, X-Amz-Date and every X-Amz-* header present must be among them) and that hash
   (`silo.sigv4`), and compares it in constant time;
5. puts the caller (a `Principal`) in the request's scope for the routes; a tenant-bound key may reach
   Invoke alone, where `api/invoke.py` applies its tenant and functions.

Refusals use AWS's codes and shapes (403): MissingAuthenticationTokenException, UnrecognizedClientException,
InvalidSignatureException, IncompleteSignatureException, AccessDeniedException. Nothing of a key's secret
is ever logged or answered. Not signed: the probes (`/healthz`, `/readyz`), `/metrics` (a scraper cannot
sign SigV4; it holds no secret), the public keys of the tenant tokens (`/.well-known/jwks.json`), the
gateway (`/gateway/...`), which checks end users' bearer tokens, and function URLs of AuthType NONE
(`/url/...`, open to anyone, as on Lambda); an AWS_IAM URL is signed.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol
from urllib.parse import unquote

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from silo import errors, sigv4
from silo.api.body import receive_body
from silo.api.invoke import PRINCIPAL, InvokeEndpoint
from silo.api.render import error_response
from silo.types import Principal

if TYPE_CHECKING:
    from silo.control.keys import ActiveKey

log = logging.getLogger(__name__)

SERVICE = "lambda"
CLOCK_SKEW_S = 300
PRESIGNED_MAX_S = 7 * 86400
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/.well-known/jwks.json"})
GATEWAY_PREFIX = "/gateway/"
FUNCTION_URL_PREFIX = "/url/"
SUMMARY_EVERY_S = 60.0
_SIGNING_KEYS_MAX = 4096
_PARSED_MAX = 4096
_READS = ("GET", "HEAD")

MISSING = (
    "Missing Authentication Token: silo takes requests signed with AWS Signature Version 4 only. Sign with the "
    "access key id and secret of a silo key (boto3, the AWS CLI and the silo CLI do, from AWS_SHARED_CREDENTIALS_FILE "
    "and AWS_PROFILE; the first `silo serve` writes an administrator key to the credentials file of its data "
    "directory, profile silo)."
)
UNRECOGNIZED = "The security token included in the request is invalid."
MISMATCH = (
    "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access "
    "Key and signing method. Consult the service documentation for details."
)


class KeyLookup(Protocol):
    def lookup(self, key_id: str) -> ActiveKey | None: ...


BodyLimit = Callable[[Scope], tuple[int, str]]


def _header_map(scope: Scope) -> dict[str, list[str]]:
    headers: dict[str, list[str]] = {}
    for name, value in scope["headers"]:
        # A signer hashes a header's value as UTF-8 text; clients put such a value on the wire as UTF-8
        # (botocore) or Latin-1 (http.client): either reads back as the text that was signed.
        try:
            text = value.decode()
        except UnicodeDecodeError:
            text = value.decode("latin-1")
        key = name.decode("latin-1")
        values = headers.get(key)
        if values is None:
            headers[key] = [text]
        else:
            values.append(text)
    return headers


class Authentication:
    """The ASGI layer in front of the application (see the module's docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        keys: KeyLookup,
        *,
        region: str,
        body_limit: BodyLimit,
        clock: Callable[[], float] = time.time,
        url_auth: Callable[[str], str | None] | None = None,
    ) -> None:
        self._app = app
        self._url_auth = url_auth
        self._keys = keys
        self._region = region
        self._body_limit = body_limit
        self._clock = clock
        self._signing_keys: dict[tuple[str, str], tuple[str, hmac.HMAC]] = {}
        self._parsed: dict[str, sigv4.Authorization] = {}
        self._refused: Counter[str] = Counter()
        self._summarised = 0.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        path: str = scope["path"]
        if path in OPEN_PATHS or path.startswith(GATEWAY_PREFIX) or self._open_url(path):
            await self._app(scope, receive, send)
            return
        try:
            principal, body = await self._authenticate(scope, receive)
        except errors.LambdaError as exc:
            self._note_refusal(scope, exc)
            await error_response(exc)(scope, receive, send)
            return
        scope[PRINCIPAL] = principal
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        if InvokeEndpoint.accepts(scope):
            # Every call comes this way: a debug line only (what it ran is in the function's own log).
            if log.isEnabledFor(logging.DEBUG):
                log.debug("%s %s by key %s", scope["method"], path, principal.key_id)
            await self._app(scope, replay, send)
            return
        await self._recorded(scope, replay, send, principal)

    def _open_url(self, path: str) -> bool:
        """Whether a path is a function URL that callers reach unsigned: one of AuthType NONE, or of no URL (the
        door answers 404). An AWS_IAM URL's requests are authenticated like any other."""
        if self._url_auth is None or not path.startswith(FUNCTION_URL_PREFIX):
            return False  # without the URLs' AuthType to go by, every request is signed
        return self._url_auth(path[len(FUNCTION_URL_PREFIX) :].split("/", 1)[0]) != "AWS_IAM"

    async def _recorded(self, scope: Scope, receive: Receive, send: Send, principal: Principal) -> None:
        """Run the request and log what it did, with the key that did it (a change at INFO, a read at DEBUG)."""
        status = 0

        async def watched(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._app(scope, receive, watched)
        finally:
            level = logging.DEBUG if scope["method"] in _READS else logging.INFO
            if log.isEnabledFor(level):
                log.log(level, "%s %s by key %s: %s", scope["method"], scope["path"], principal.key_id, status or "-")

    async def _authenticate(self, scope: Scope, receive: Receive) -> tuple[Principal, bytes]:
        headers = _header_map(scope)
        query: str = scope["query_string"].decode("latin-1")
        presigned = False
        given = headers.get("authorization")
        if given is not None:
            auth, date, signature = self._from_header(given, headers)
        elif sigv4.Q_CREDENTIAL in query:
            auth, date, expires = self._from_query(query, scope["method"])
            signature = auth.signature
            presigned = True
        else:
            raise errors.MissingAuthenticationTokenException(MISSING)
        key = self._keys.lookup(auth.access_key)
        if key is None:
            raise errors.UnrecognizedClientException(UNRECOGNIZED)
        when = self._check_scope(auth, date)
        now = self._clock()
        if presigned:
            if when + expires < now:
                raise errors.InvalidSignatureException(
                    f"Signature expired: the presigned URL was valid until {sigv4.amz_date(when + expires)}, and it "
                    f"is now {sigv4.amz_date(now)}. Ask for a new one."
                )
            if when > now + CLOCK_SKEW_S:
                raise _not_yet(date, now)
        elif when < now - CLOCK_SKEW_S:
            raise errors.InvalidSignatureException(
                f"Signature expired: {date} is now earlier than {sigv4.amz_date(now - CLOCK_SKEW_S)} "
                f"({sigv4.amz_date(now)} - 5 min.) Sign the request again, and check that the client's clock is right."
            )
        elif when > now + CLOCK_SKEW_S:
            raise _not_yet(date, now)
        signed = auth.signed_headers
        _check_signed_headers(signed, headers)
        limit, operation = self._body_limit(scope)
        declared = headers.get("content-length")
        body = await receive_body(receive, declared[0] if declared else "", limit, operation)
        raw_path = scope.get("raw_path") or scope["path"].encode()
        canonical = sigv4.canonical_request(
            scope["method"],
            raw_path.decode("latin-1"),
            query,
            headers,
            signed,
            hashlib.sha256(body).hexdigest(),
            presigned=presigned,
        )
        to_sign = sigv4.string_to_sign(date, auth.scope, canonical)
        signing_key = self._signing_key(auth.access_key, key.secret, auth.date)
        good = sigv4.same_signature(_signed_with(signing_key, to_sign), signature)
        if not good and query and sigv4.canonical_query(query, reencode=True) != sigv4.canonical_query(query):
            # A query that did not arrive in the canonical encoding, from a signer that canonicalised it by the
            # specification (the same parameters, so no other request than the one signed).
            canonical = sigv4.canonical_request(
                scope["method"],
                raw_path.decode("latin-1"),
                query,
                headers,
                signed,
                hashlib.sha256(body).hexdigest(),
                presigned=presigned,
                reencode=True,
            )
            to_sign = sigv4.string_to_sign(date, auth.scope, canonical)
            good = sigv4.same_signature(_signed_with(signing_key, to_sign), signature)
        if not good:
            raise errors.InvalidSignatureException(
                f"{MISMATCH}\n\nThe Canonical String for this request should have been\n'{canonical}'\n\n"
                f"The String-to-Sign should have been\n'{to_sign}'\n"
            )
        principal = key.principal
        if not principal.admin and not InvokeEndpoint.accepts(scope):
            raise errors.AccessDeniedException(
                f"Key {principal.key_id} is bound to tenant '{principal.tenant}': it may invoke "
                f"{', '.join(sorted(principal.functions))} as that tenant, and call no other operation "
                f"({scope['method']} {scope['path']})."
            )
        return principal, body

    def _from_header(self, given: list[str], headers: dict[str, list[str]]) -> tuple[sigv4.Authorization, str, str]:
        """The Authorization header's fields, the request's date and the signature given."""
        if len(given) != 1:
            raise errors.IncompleteSignatureException("A request carries one Authorization header, not several.")
        value = given[0]
        # A client's headers differ from one request to the next by their signature alone (and their scope's
        # date, daily): what comes before the signature is parsed once, and the signature read off the end.
        cut = value.rfind("Signature=")
        tail = value[cut + 10 :].strip() if cut > 0 else ""
        prefix = value[:cut] if tail and "," not in tail else ""
        auth = self._parsed.get(prefix) if prefix else None
        if auth is None:
            try:
                auth = sigv4.parse_authorization(value)
            except sigv4.Malformed as exc:
                raise errors.IncompleteSignatureException(str(exc)) from None
            if prefix:
                if len(self._parsed) >= _PARSED_MAX:
                    self._parsed.clear()
                self._parsed[prefix] = auth
            signature = auth.signature
        else:
            signature = tail
        dates = headers.get("x-amz-date")
        if not dates or len(dates) != 1:
            raise errors.IncompleteSignatureException(
                "Authorization header requires existence of an 'X-Amz-Date' header (silo reads the request's time "
                "from X-Amz-Date only, as the AWS SDKs send it)."
            )
        return auth, dates[0], signature

    def _from_query(self, query: str, method: str) -> tuple[sigv4.Authorization, str, int]:
        params: dict[str, str] = {}
        for pair in query.split("&"):
            name, _, value = pair.partition("=")
            params[unquote(name)] = unquote(value)
        if method not in _READS:
            raise errors.IncompleteSignatureException("A presigned URL may only be used to GET.")
        missing = [
            n
            for n in (
                sigv4.Q_ALGORITHM,
                sigv4.Q_CREDENTIAL,
                sigv4.Q_DATE,
                sigv4.Q_EXPIRES,
                sigv4.Q_SIGNED_HEADERS,
                sigv4.Q_SIGNATURE,
            )
            if not params.get(n)
        ]
        if missing:
            raise errors.IncompleteSignatureException(f"A presigned URL requires the {', '.join(missing)} parameters.")
        if params[sigv4.Q_ALGORITHM] != sigv4.ALGORITHM:
            raise errors.IncompleteSignatureException(f"X-Amz-Algorithm must be {sigv4.ALGORITHM}.")
        expires = params[sigv4.Q_EXPIRES]
        if not expires.isdigit() or not 1 <= int(expires) <= PRESIGNED_MAX_S:
            raise errors.IncompleteSignatureException(
                f"X-Amz-Expires must be a number of seconds from 1 to {PRESIGNED_MAX_S}."
            )
        try:
            parts = sigv4.parse_credential(params[sigv4.Q_CREDENTIAL])
        except sigv4.Malformed as exc:
            raise errors.IncompleteSignatureException(str(exc)) from None
        auth = sigv4.Authorization(*parts, params[sigv4.Q_SIGNED_HEADERS].split(";"), params[sigv4.Q_SIGNATURE])
        return auth, params[sigv4.Q_DATE], int(expires)

    def _check_scope(self, auth: sigv4.Authorization, date: str) -> float:
        when = sigv4.parse_amz_date(date)
        if when is None:
            raise errors.IncompleteSignatureException(
                f"X-Amz-Date must be an ISO 8601 basic time such as 20260102T030405Z, not '{date}'."
            )
        if auth.date != date[:8]:
            raise errors.InvalidSignatureException(
                f"Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: "
                f"'{auth.date}' != '{date[:8]}', from '{date}'."
            )
        if auth.region != self._region:
            raise errors.InvalidSignatureException(
                f"Credential should be scoped to a valid region, not '{auth.region}'. This server stands for region "
                f"'{self._region}': set the client's region to it (AWS_REGION, --region, region_name)."
            )
        if auth.service != SERVICE:
            raise errors.InvalidSignatureException(
                f"Credential should be scoped to correct service: '{SERVICE}', not '{auth.service}'."
            )
        if auth.terminator != sigv4.TERMINATOR:
            raise errors.InvalidSignatureException(
                f"Credential should be scoped with a valid terminator: '{sigv4.TERMINATOR}', not '{auth.terminator}'."
            )
        return when

    def _signing_key(self, key_id: str, secret: str, date: str) -> hmac.HMAC:
        """The day's signing key of a key, as an HMAC ready to be copied: deriving it costs four HMACs, and
        setting an HMAC up with it another two hashes, for every request of that key that day."""
        cached = self._signing_keys.get((key_id, date))
        if cached is not None and cached[0] == secret:
            return cached[1]
        if len(self._signing_keys) >= _SIGNING_KEYS_MAX:
            self._signing_keys.clear()
        derived = hmac.new(sigv4.signing_key(secret, date, self._region, SERVICE), digestmod=hashlib.sha256)
        self._signing_keys[(key_id, date)] = (secret, derived)
        return derived

    def _note_refusal(self, scope: Scope, exc: errors.LambdaError) -> None:
        """Each refusal at DEBUG; a summary at most once a minute at INFO, so a flood cannot fill the log."""
        log.debug("refused %s %s: %s", scope["method"], scope["path"], exc.code)
        self._refused[exc.code] += 1
        now = self._clock()
        if now - self._summarised >= SUMMARY_EVERY_S:
            what = ", ".join(f"{code} {n}" for code, n in self._refused.most_common())
            log.info("authentication refused, since the last report: %s", what)
            self._refused.clear()
            self._summarised = now


def _signed_with(prepared: hmac.HMAC, to_sign: str) -> str:
    mac = prepared.copy()
    mac.update(to_sign.encode())
    return mac.hexdigest()


def _not_yet(date: str, now: float) -> errors.InvalidSignatureException:
    return errors.InvalidSignatureException(
        f"Signature not yet current: {date} is still later than {sigv4.amz_date(now + CLOCK_SKEW_S)} "
        f"({sigv4.amz_date(now)} + 5 min.) Check that the client's clock is right."
    )


def _check_signed_headers(signed: list[str], headers: dict[str, list[str]]) -> None:
    previous = ""
    for name in signed:
        # Strictly increasing: sorted, each once.
        if name <= previous or name.lower() != name:
            raise errors.InvalidSignatureException(
                "SignedHeaders must list header names in lower case, sorted, each once, separated by ';'."
            )
        previous = name
    unsigned = [name for name in headers if (name.startswith("x-amz-") or name == "host") and name not in signed]
    if "host" not in signed and "host" not in unsigned:
        unsigned.append("host")
    if unsigned:
        unsigned.sort()
        raise errors.InvalidSignatureException(
            f"The request's {', '.join(unsigned)} header(s) are not signed: silo requires Host, X-Amz-Date and every "
            "X-Amz-* header a request carries to be signed, so that none can be changed on the way."
        )


def body_limit(max_request_bytes: int, invoke_limit: int) -> BodyLimit:
    """How much body the layer reads before the signature is checked: Invoke's limit for Invoke, the largest
    other request's (CreateFunction's) for the rest; each route applies its own limit again."""

    def limit(scope: Scope) -> tuple[int, str]:
        if InvokeEndpoint.accepts(scope):
            return invoke_limit, "InvokeFunction"
        if scope["path"].startswith(FUNCTION_URL_PREFIX):
            return invoke_limit, "InvokeFunctionUrl"
        return max_request_bytes, f"{scope['method']} {scope['path']}"

    return limit


CODE_URL_EXPIRES_S = 600  # Lambda's presigned Code.Location lasts ten minutes


class UrlSigner:
    """Presigned URLs (SigV4 in the query string), as Lambda gives GetFunction's Code.Location: signed with the
    caller's own key, so the URL opens what that key may open, for ten minutes, and nothing once it is revoked."""

    def __init__(self, keys: KeyLookup, region: str, clock: Callable[[], float] = time.time) -> None:
        self._keys = keys
        self._region = region
        self._clock = clock

    def __call__(self, principal: Principal | None, host: str, raw_path: str) -> str:
        """The query to append to `raw_path`; empty when the caller has no key (authentication is off)."""
        if principal is None or principal.key_id is None:
            return ""
        key = self._keys.lookup(principal.key_id)
        if key is None:
            return ""
        return sigv4.presign_query(
            access_key=principal.key_id,
            secret=key.secret,
            method="GET",
            host=host,
            raw_path=raw_path,
            region=self._region,
            expires_s=CODE_URL_EXPIRES_S,
            now=self._clock(),
        )


def check_auth_setting(auth: str, host: str) -> None:
    """Refuse `auth = none` unless the server listens on a loopback address (a ValueError says why)."""
    if auth != "none":
        return
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(
            f"--auth none turns authentication off, so it is refused on {host}, which is not a loopback address: "
            "anyone who could reach the port could do anything, as any tenant. Listen on 127.0.0.1 (--host), or "
            "keep --auth sigv4 and sign requests with a silo key."
        )
