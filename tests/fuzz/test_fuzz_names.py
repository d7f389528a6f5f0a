"""Fuzz what a caller names in an Invoke: the tenant id (X-Amz-Tenant-Id), the function name (a name, a
partial or full ARN, with or without a qualifier) and the Qualifier parameter.

Arbitrary text gives either a value or a Lambda error, never another exception; what is accepted is
what the service model's patterns accept (read as Lambda reads them: ASCII classes); what parses
round-trips (an ARN built from a parsed name parses to the same function, and a tenant id reaches the
runtime inside the environment as the very id silo routed on).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import socket
import string
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httptools
import pytest
from hypothesis import assume, event, given
from hypothesis import strategies as st
from starlette.types import Message

from silo import errors
from silo.api.invoke import PATH_PREFIX, PATH_SUFFIX, TENANT_ID_MAX, InvokeEndpoint, check_tenant
from silo.config import Settings
from silo.control.functions import FunctionService
from silo.control.names import (
    FUNCTION_NAME_PATTERN,
    NAMESPACED_FUNCTION_NAME_PATTERN,
    QUALIFIER_PATTERN,
    FunctionRef,
    function_arn,
    merge_qualifier,
    parse_function_name,
)
from silo.runtime_api import wire
from silo.runtimes.python.client import RuntimeClient
from silo.store.code import CodeStore
from silo.store.db import open_database
from silo.types import EnvKey, FunctionSpec, Invocation, InvocationResult
from tests.fuzz.bounded import fuzz_settings
from tests.support import function_spec, zip_files

ARN = "arn:aws:lambda:us-east-1:000000000000:function:f"
TENANT_CHARS = set(string.ascii_letters + string.digits + "._:/=+-@ ")


def tenant_ok(value: str) -> bool:
    """Lambda's rule (length 1-256, the model's pattern), and no space at either end: an HTTP header
    cannot carry one there reliably (parsers drop leading ones, runtimes strip both)."""
    return 1 <= len(value) <= TENANT_ID_MAX and set(value) <= TENANT_CHARS and value == value.strip(" ")


def header_as_served(raw: bytes) -> bytes | None:
    """The X-Amz-Tenant-Id value silo's HTTP server (uvicorn over httptools) hands the app, or None when
    the request is refused before the app (a 400) or carries no such header."""

    class Head:
        value: bytes | None = None

        def on_header(self, name: bytes, value: bytes) -> None:
            if name.lower() == b"x-amz-tenant-id" and self.value is None:
                self.value = value

    head = Head()
    request = b"POST /x HTTP/1.1\r\nHost: silo\r\nX-Amz-Tenant-Id: " + raw + b"\r\nContent-Length: 0\r\n\r\n"
    try:
        httptools.HttpRequestParser(head).feed_data(request)
    except httptools.HttpParserError:
        return None
    return head.value


def as_the_runtime_reads_it(tenant: str) -> str | None:
    """The tenant id silo's Python runtime reads from the GET /next answer that carries `tenant`."""
    inv = Invocation("rid-1", b"{}", tenant, ARN)
    ours, theirs = socket.socketpair()
    try:
        ours.sendall(wire.next_head(inv, 1) + inv.payload)
        client = RuntimeClient("127.0.0.1:9", connection_fd=os.dup(theirs.fileno()))
        try:
            return client.wait_next_invocation().tenant_id
        finally:
            client.close()
    finally:
        ours.close()
        theirs.close()


PER_TENANT = function_spec("f", per_tenant=True)
PLAIN = function_spec("g", per_tenant=False)
TENANTISH = st.text(alphabet=[*sorted(TENANT_CHARS), "\t", "\x7f", "é", "\x00", "\r", "\n"], max_size=300)


@fuzz_settings(600)
@given(raw=st.one_of(st.binary(max_size=300), TENANTISH.map(lambda t: t.encode("utf-8"))))
def test_a_tenant_id_reaches_the_runtime_as_silo_routed_it(raw: bytes) -> None:
    served = header_as_served(raw)
    assume(served is not None)
    assert served is not None
    tenant = served.decode("latin-1")  # as the invoke endpoint reads header values
    try:
        check_tenant(PER_TENANT, tenant)
    except errors.InvalidParameterValueException as exc:
        assert not tenant_ok(tenant), f"refused a valid tenant id {tenant!r}: {exc.message}"
        return
    assert as_the_runtime_reads_it(tenant) == tenant
    assert tenant_ok(tenant), f"accepted {tenant!r}"


@fuzz_settings(600)
@given(tenant=st.one_of(st.none(), st.text(max_size=300), TENANTISH))
def test_check_tenant_accepts_exactly_the_valid_ids(tenant: str | None) -> None:
    for spec in (PER_TENANT, PLAIN):
        try:
            check_tenant(spec, tenant)
        except errors.InvalidParameterValueException:
            accepted = False
        else:
            accepted = True
        valid = tenant is None or tenant_ok(tenant)
        assert accepted == (valid and (tenant is not None) == spec.per_tenant), (spec.function_name, tenant)


def model_accepts(value: str, *, namespaced: bool) -> bool:
    """The service model's rule for FunctionName, read the way Lambda reads it: `\\d` is 0-9 only."""
    pattern, max_len = (NAMESPACED_FUNCTION_NAME_PATTERN, 256) if namespaced else (FUNCTION_NAME_PATTERN, 140)
    return 1 <= len(value) <= max_len and re.fullmatch(pattern, value, re.ASCII) is not None


NAMEISH = st.one_of(
    st.text(max_size=300),
    st.from_regex(FUNCTION_NAME_PATTERN, fullmatch=True),
    st.from_regex(NAMESPACED_FUNCTION_NAME_PATTERN, fullmatch=True),
    st.from_regex(re.compile(NAMESPACED_FUNCTION_NAME_PATTERN, re.ASCII), fullmatch=True),
)


@fuzz_settings(400)
@given(value=NAMEISH, namespaced=st.booleans())
def test_function_names_parse_as_the_model_says_and_round_trip(value: str, namespaced: bool) -> None:
    try:
        ref = parse_function_name(value, namespaced=namespaced)
    except (errors.ValidationException, errors.InvalidParameterValueException):
        # Accepted by the model, yet refused: only for a name part over 64 characters.
        if model_accepts(value, namespaced=namespaced):
            match = re.fullmatch(r"(?:.*:function:|\d{12}:)?([^:]+)(?::[^:]*)?", value, re.ASCII)
            assert match is not None and len(match[1]) > 64, value
        return
    assert model_accepts(value, namespaced=namespaced), f"accepted {value!r}"
    assert 1 <= len(ref.name) <= 64
    arn = function_arn(ref.region or "us-east-1", ref.account or "123456789012", ref.name, ref.qualifier)
    if model_accepts(arn, namespaced=namespaced):
        assert parse_function_name(arn, namespaced=namespaced) == FunctionRef(
            ref.name, ref.qualifier, ref.region or "us-east-1", ref.account or "123456789012"
        )


QUALIFIERISH = st.one_of(st.text(max_size=200), st.from_regex(QUALIFIER_PATTERN, fullmatch=True))


@fuzz_settings(600)
@given(name_qualifier=st.one_of(st.none(), QUALIFIERISH), qualifier=st.one_of(st.none(), QUALIFIERISH))
def test_qualifiers_merge_or_are_refused(name_qualifier: str | None, qualifier: str | None) -> None:
    ref = FunctionRef("f", name_qualifier, None, None)
    try:
        merged = merge_qualifier(ref, qualifier)
    except (errors.ValidationException, errors.InvalidParameterValueException):
        assert qualifier is not None
        valid = 1 <= len(qualifier) <= 128 and re.fullmatch(QUALIFIER_PATTERN, qualifier, re.ASCII) is not None
        assert not valid or (name_qualifier is not None and name_qualifier != qualifier)
        return
    if qualifier is not None:
        assert 1 <= len(qualifier) <= 128 and re.fullmatch(QUALIFIER_PATTERN, qualifier, re.ASCII)
    assert merged == (name_qualifier if name_qualifier is not None else qualifier)


# The invoke endpoint end to end, over a real FunctionService, with what the HTTP server would hand it.


class Router:
    def __init__(self) -> None:
        self.keys: list[EnvKey] = []

    async def invoke(self, key: EnvKey, spec: FunctionSpec, inv: Invocation) -> InvocationResult:
        self.keys.append(key)
        return InvocationResult(payload=b'{"ok":true}', log_tail=b"tail")


class Events:
    async def accept(self, **kwargs: Any) -> None:
        pass


@pytest.fixture(scope="module")
def functions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FunctionService]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("names") / "data")
    db = open_database(settings.db_path)
    svc = FunctionService(
        settings, db, CodeStore(settings.code_dir), lambda arn, version: None, available_runtimes=lambda: ["python3.11"]
    )
    code = zip_files({"app.py": "def handler(e, c):\n    return e\n"})
    for name, extra in (("f", {"TenancyConfig": {"TenantIsolationMode": "PER_TENANT"}}), ("g", {})):
        svc.create_function(
            {
                "FunctionName": name,
                "Runtime": "python3.11",
                "Role": "arn:aws:iam::123456789012:role/r",
                "Handler": "app.handler",
                "Code": {"ZipFile": base64.b64encode(code).decode()},
                **extra,
            }
        )
    yield svc
    db.close()


def invoke(endpoint: InvokeEndpoint, name: str, query: bytes, headers: list[tuple[bytes, bytes]]) -> Any:
    scope = {
        "type": "http",
        "method": "POST",
        "path": PATH_PREFIX + name + PATH_SUFFIX,
        "query_string": query,
        "headers": headers,
    }
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    assert InvokeEndpoint.accepts(scope)
    asyncio.run(endpoint(scope, receive, send))
    return sent


KNOWN_NAMES = st.sampled_from(["f", "g", "f:$LATEST", "g:1", ARN, ARN + ":$LATEST", "000000000000:function:f"])
VALID_TENANTS = st.from_regex(
    re.compile(r"[a-zA-Z0-9._:/=+@-]([a-zA-Z0-9._:/=+@ -]{0,20}[a-zA-Z0-9._:/=+@-])?"), fullmatch=True
)
ANY_QUALIFIER = st.one_of(st.none(), st.just("$LATEST"), QUALIFIERISH, st.text(alphabet="%&=+;$a", max_size=12))
ANY_TENANT = st.one_of(st.none(), VALID_TENANTS.map(str.encode), st.binary(max_size=80), TENANTISH.map(str.encode))
INVOCATION_TYPES = st.sampled_from([None, b"RequestResponse", b"Event", b"DryRun", b"bogus"])


def check_invoke(
    functions: FunctionService, name: str, qualifier: str | None, tenant: bytes | None, invocation_type: bytes | None
) -> int:
    router = Router()
    endpoint = InvokeEndpoint(functions, router, Events())
    headers: list[tuple[bytes, bytes]] = [(b"content-length", b"2")]
    if tenant is not None:
        served = header_as_served(tenant)
        assume(served is not None)
        assert served is not None
        headers.append((b"x-amz-tenant-id", served))
    if invocation_type is not None:
        headers.append((b"x-amz-invocation-type", invocation_type))
    query = b"" if qualifier is None else b"Qualifier=" + quote(qualifier, safe="%&=+;$").encode()
    start, body = invoke(endpoint, name, query, headers)
    status: int = start["status"]
    event(f"status {status}")
    if status >= 400:
        assert status < 500, (status, body["body"])
        assert b"x-amzn-errortype" in {k.lower() for k, _ in start["headers"]}
        document = json.loads(body["body"])
        assert isinstance(document.get("message") or document.get("Message"), str)
        return status
    assert status in (200, 202, 204)
    if status == 200:
        (key,) = router.keys
        sent_tenant = dict(headers).get(b"x-amz-tenant-id")
        assert key.tenant_id == (None if sent_tenant is None else sent_tenant.decode("latin-1"))
        assert (key.tenant_id is not None) == key.function_arn.endswith(":f")
        assert key.tenant_id is None or tenant_ok(key.tenant_id)
    return status


@fuzz_settings(250)
@given(
    name=st.one_of(KNOWN_NAMES, NAMEISH.filter(lambda n: "/" not in n and n)),
    qualifier=ANY_QUALIFIER,
    tenant=ANY_TENANT,
    invocation_type=INVOCATION_TYPES,
)
def test_invoke_answers_with_a_result_or_a_lambda_error(
    functions: FunctionService, name: str, qualifier: str | None, tenant: bytes | None, invocation_type: bytes | None
) -> None:
    check_invoke(functions, name, qualifier, tenant, invocation_type)


@fuzz_settings(150)
@given(
    name=KNOWN_NAMES,
    qualifier=st.one_of(st.none(), st.just("$LATEST"), ANY_QUALIFIER),
    tenant=st.one_of(st.none(), VALID_TENANTS.map(str.encode), ANY_TENANT),
    invocation_type=INVOCATION_TYPES,
)
def test_invoke_of_a_deployed_function_reaches_the_router_with_the_tenant_sent(
    functions: FunctionService, name: str, qualifier: str | None, tenant: bytes | None, invocation_type: bytes | None
) -> None:
    check_invoke(functions, name, qualifier, tenant, invocation_type)


def test_the_runtime_round_trip_helper_sees_a_plain_id() -> None:
    assert as_the_runtime_reads_it("tenant-a/b c") == "tenant-a/b c"
