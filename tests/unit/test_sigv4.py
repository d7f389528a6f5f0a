"""silo's SigV4 against botocore's: the same canonical request and signature for what boto3 and the AWS CLI send."""

from __future__ import annotations

import contextlib
import datetime
import hashlib
from collections.abc import Iterator
from urllib.parse import urlsplit

import botocore.auth
import pytest
from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from silo import sigv4

CREDS = Credentials("SILOEXAMPLEKEY123456", "secret/with+chars=")
NOW = 1_800_000_000.0


def botocore_signed(method: str, url: str, body: bytes, headers: dict[str, str]) -> AWSRequest:
    """The request as botocore signs it at NOW, with its canonical request kept in its context."""
    request = AWSRequest(method=method, url=url, data=body, headers=headers)
    auth = Recording(CREDS, "lambda", "eu-west-1")
    with at_now():
        auth.add_auth(request)
    request.context["canonical"] = auth.canonical
    return request


class Recording(SigV4Auth):
    canonical = ""

    def canonical_request(self, request: AWSRequest) -> str:
        self.canonical = str(super().canonical_request(request))  # type: ignore[no-untyped-call]
        return self.canonical


@contextlib.contextmanager
def at_now() -> Iterator[None]:
    """botocore's signers read the clock through botocore.auth.get_current_datetime."""
    real = botocore.auth.get_current_datetime
    botocore.auth.get_current_datetime = lambda: datetime.datetime.fromtimestamp(NOW, datetime.UTC).replace(tzinfo=None)
    try:
        yield
    finally:
        botocore.auth.get_current_datetime = real


def verify_like_the_server(request: AWSRequest) -> tuple[str, bool]:
    """What silo's verifier recomputes from the request as it goes on the wire."""
    parts = urlsplit(request.url)
    auth = sigv4.parse_authorization(request.headers["Authorization"])
    headers: dict[str, list[str]] = {}
    for name, value in request.headers.items():
        headers.setdefault(name.lower(), []).append(value)
    headers.setdefault("host", [parts.netloc])
    body = request.body or b""
    canonical = sigv4.canonical_request(
        request.method, parts.path, parts.query, headers, auth.signed_headers, hashlib.sha256(body).hexdigest()
    )
    key = sigv4.signing_key(CREDS.secret_key, auth.date, auth.region, auth.service)
    expected = sigv4.signature(key, sigv4.string_to_sign(request.headers["X-Amz-Date"], auth.scope, canonical))
    return canonical, sigv4.same_signature(expected, auth.signature)


@pytest.mark.parametrize(
    ("method", "url", "body"),
    [
        ("POST", "http://127.0.0.1:9700/2015-03-31/functions/f/invocations", b'{"a": 1}'),
        (
            "POST",
            "http://127.0.0.1:9700/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A000000000000%3Afunction%3Af"
            "/invocations?Qualifier=%24LATEST",
            b"{}",
        ),
        ("GET", "http://localhost/2015-03-31/functions/?MaxItems=5&Marker=a%2Fb%20c&FunctionVersion=ALL", b""),
        ("GET", "http://h:1/silo/v1/functions/x//logs/./y/../z?tenant=a%3Ab&tenant=%C3%A9", b""),
        ("GET", "http://h:1/silo/v1/functions/x/events?State=pending,running&MaxItems=100", b""),
        ("DELETE", "http://h/silo/v1/keys/SILOABC~x", b""),
    ],
)
def test_the_canonical_request_and_signature_are_botocores(method: str, url: str, body: bytes) -> None:
    request = botocore_signed(method, url, body, {"X-Amz-Tenant-Id": "  acme   corp ", "Content-Type": "x"})
    canonical, ok = verify_like_the_server(request)
    assert canonical == request.context["canonical"]
    assert ok


def test_a_changed_body_or_header_or_path_breaks_the_signature() -> None:
    url = "http://h/2015-03-31/functions/f/invocations"
    request = botocore_signed("POST", url, b"{}", {"X-Amz-Tenant-Id": "a"})
    request.data = b'{"x":1}'
    assert not verify_like_the_server(request)[1]
    request = botocore_signed("POST", url, b"{}", {"X-Amz-Tenant-Id": "a"})
    request.headers.replace_header("X-Amz-Tenant-Id", "b")
    assert not verify_like_the_server(request)[1]
    request = botocore_signed("POST", url, b"{}", {})
    request.url = url.replace("/f/", "/g/")
    assert not verify_like_the_server(request)[1]


def test_silos_signer_is_accepted_by_its_verifier_and_matches_botocore() -> None:
    headers = {"Content-Type": "application/json", "X-Amz-Tenant-Id": "t"}
    added = sigv4.sign_headers(
        access_key=CREDS.access_key,
        secret=CREDS.secret_key,
        method="POST",
        host="127.0.0.1:9700",
        raw_path="/2015-03-31/functions/f%3A1/invocations",
        raw_query="Qualifier=1",
        headers=headers,
        body=b"{}",
        region="eu-west-1",
        now=NOW,
    )
    theirs = botocore_signed(
        "POST", "http://127.0.0.1:9700/2015-03-31/functions/f%3A1/invocations?Qualifier=1", b"{}", headers
    )
    assert added["Authorization"] == theirs.headers["Authorization"]


def test_a_presigned_url_is_botocores() -> None:
    query = sigv4.presign_query(
        access_key=CREDS.access_key,
        secret=CREDS.secret_key,
        method="GET",
        host="h:9",
        raw_path="/silo/v1/functions/f/code",
        region="eu-west-1",
        expires_s=600,
        now=NOW,
    )
    request = AWSRequest(method="GET", url="http://h:9/silo/v1/functions/f/code")
    with at_now():
        SigV4QueryAuth(CREDS, "lambda", "eu-west-1", expires=600).add_auth(request)
    assert urlsplit(request.url).query == query


def test_authorization_headers_that_are_not_sigv4_are_explained() -> None:
    with pytest.raises(sigv4.Malformed, match="Unsupported authorization type 'Bearer'"):
        sigv4.parse_authorization("Bearer abc")
    with pytest.raises(sigv4.Malformed, match="requires 'Signature' parameter"):
        sigv4.parse_authorization("AWS4-HMAC-SHA256 Credential=a/b/c/d/e, SignedHeaders=host")
    with pytest.raises(sigv4.Malformed, match="Credential should be of the form"):
        sigv4.parse_authorization("AWS4-HMAC-SHA256 Credential=a/b, SignedHeaders=host, Signature=x")


def test_a_query_canonicalised_by_the_specification_is_the_same_parameters() -> None:
    assert sigv4.canonical_query("State=pending,running&B=1") == "B=1&State=pending,running"
    assert sigv4.canonical_query("State=pending,running&B=1", reencode=True) == "B=1&State=pending%2Crunning"
    assert sigv4.canonical_query("a=%7e&b=%41", reencode=True) == "a=~&b=A"


def test_dates_are_read_as_x_amz_date_writes_them() -> None:
    assert sigv4.parse_amz_date(sigv4.amz_date(NOW)) == NOW
    for bad in ("", "20260102T030405", "2026-01-02T03:04:05Z", "20261302T030405Z", "2026010xT030405Z"):
        assert sigv4.parse_amz_date(bad) is None
