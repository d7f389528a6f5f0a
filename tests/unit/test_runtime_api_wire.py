"""The Runtime API's wire pieces: error documents, error types, the /next head, shared constants."""

from __future__ import annotations

import base64
import json

import pytest

from silo.runtime_api import paths, wire
from silo.runtimes.python import client as runtime_client
from silo.types import Invocation


@pytest.mark.parametrize(
    ("body", "header", "expected_type"),
    [
        (b'{"errorMessage": "m", "errorType": "KeyError"}', None, "KeyError"),
        (b'{"errorMessage": "m", "errorType": "KeyError"}', "Runtime.ImportModuleError", "Runtime.ImportModuleError"),
        (b'{"errorMessage": "m", "errorType": "KeyError"}', "Runtime.lowercase", "KeyError"),
        (b'{"errorMessage": "m"}', None, "Runtime.Unknown"),
        (b'{"errorMessage": "m"}', "Function.x", "Function.Unknown"),
        (b"[1, 2]", None, "Runtime.Unknown"),
    ],
)
def test_error_type(body: bytes, header: str | None, expected_type: str) -> None:
    assert wire.normalise_error(body, header)[1] == expected_type


def test_error_document_kept_verbatim_when_it_is_a_json_object() -> None:
    body = b'{"errorMessage": "m", "errorType": "E", "stackTrace": []}'
    assert wire.normalise_error(body, None)[0] is body


def test_error_document_synthesised_from_anything_else() -> None:
    body, _ = wire.normalise_error(b"\xffboom", "Function.Crash")
    assert json.loads(body) == {"errorMessage": "\ufffdboom", "errorType": "Function.Crash"}


def test_client_context_is_decoded_and_kept_on_one_line() -> None:
    pretty = json.dumps({"custom": {"k": "v\u00e9"}}, indent=2)
    text = wire.client_context_text(base64.b64encode(pretty.encode()).decode())
    assert text is not None
    assert "\n" not in text
    assert json.loads(text) == {"custom": {"k": "v\u00e9"}}
    assert wire.client_context_text("not base64!") is None


def test_next_head_sets_tenant_only_when_there_is_one() -> None:
    inv = Invocation("r", b"{}", None, "arn:aws:lambda:us-east-1:1:function:f")
    assert paths.TENANT_ID.encode() not in wire.next_head(inv, 1)
    inv.tenant_id = "acme"
    assert f"{paths.TENANT_ID}: acme\r\n".encode() in wire.next_head(inv, 1)


@pytest.mark.parametrize("field", ["request_id", "invoked_arn", "tenant_id"])
def test_next_head_refuses_line_breaks(field: str) -> None:
    inv = Invocation("r", b"{}", "t", "arn")
    setattr(inv, field, "x\r\nInjected: 1")
    with pytest.raises(ValueError, match="line break"):
        wire.next_head(inv, 1)


def test_trace_ids_differ() -> None:
    assert wire.trace_id() != wire.trace_id()


def test_the_python_runtime_speaks_the_same_paths_and_headers() -> None:
    # The runtime cannot import silo, so it keeps a copy; this keeps the copy honest.
    assert runtime_client.NEXT == paths.NEXT
    assert runtime_client.INIT_ERROR == paths.INIT_ERROR
    assert runtime_client.INVOCATION_PREFIX == paths.INVOCATION_PREFIX
    for name in (
        "REQUEST_ID",
        "DEADLINE_MS",
        "INVOKED_FUNCTION_ARN",
        "TRACE_ID",
        "CLIENT_CONTEXT",
        "COGNITO_IDENTITY",
        "TENANT_ID",
        "FUNCTION_ERROR_TYPE",
        "TENANT_TOKEN_HEADER",
    ):
        assert getattr(runtime_client, name) == getattr(paths, name), name
