"""A small client of silo's HTTP API for the CLI: Lambda's REST-JSON, with errors made readable."""

from __future__ import annotations

import http.client
import json
import urllib.parse
from dataclasses import dataclass
from typing import Any

from silo import sigv4
from silo.cli.credentials import Credentials


class ApiError(Exception):
    """The server answered with a Lambda error."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class Unreachable(Exception):
    """No silo server answered at the endpoint."""


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


class Client:
    """Requests signed with SigV4 by `credentials` (silo.sigv4, the code the server verifies with), or
    unsigned when there are none (a server run with --auth none)."""

    def __init__(self, endpoint: str, timeout: float = 960.0, credentials: Credentials | None = None) -> None:
        parsed = urllib.parse.urlsplit(endpoint)
        if parsed.scheme != "http" or not parsed.hostname:
            raise ValueError(f"endpoint must look like http://HOST:PORT, got {endpoint!r}")
        self.endpoint = endpoint
        self.credentials = credentials
        self._host = parsed.hostname
        self._port = parsed.port or 80
        # The Host header is set here, not by http.client, because it is signed.
        self._host_header = parsed.netloc
        self._timeout = timeout

    def _signed(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> dict[str, str]:
        out = {"Host": self._host_header, **headers}
        if self.credentials is None:
            return out
        raw_path, _, raw_query = path.partition("?")
        out.update(
            sigv4.sign_headers(
                access_key=self.credentials.access_key,
                secret=self.credentials.secret,
                method=method,
                host=self._host_header,
                raw_path=raw_path,
                raw_query=raw_query,
                headers=headers,
                body=body or b"",
                region=self.credentials.region,
            )
        )
        return out

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> Reply:
        conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
        try:
            conn.request(method, path, body=body, headers=self._signed(method, path, body, headers or {}))
            resp = conn.getresponse()
            data = resp.read()
        except (ConnectionError, OSError) as exc:
            raise Unreachable(
                f"no silo server answers at {self.endpoint} ({exc}). Start one with `silo serve` "
                "(or `make run`), or point --endpoint / SILO_ENDPOINT at yours."
            ) from None
        finally:
            conn.close()
        reply = Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
        if resp.status >= 400 and "x-amzn-errortype" in reply.headers:
            try:
                doc = json.loads(data)
            except ValueError:
                doc = {}
            message = doc.get("message") or doc.get("Message") or data.decode(errors="replace")
            code = reply.headers["x-amzn-errortype"]
            if code in AUTH_ERRORS:
                message += " " + self._credentials_hint()
            raise ApiError(resp.status, code, message)
        return reply

    def json(self, method: str, path: str, doc: Any = None) -> Any:
        body = None if doc is None else json.dumps(doc).encode()
        headers = {"Content-Type": "application/json"} if body is not None else {}
        return self.request(method, path, body, headers).json()

    def _credentials_hint(self) -> str:
        if self.credentials is None:
            return (
                "(silo found no credentials: set AWS_SHARED_CREDENTIALS_FILE to the server's credentials file, "
                "<data-dir>/credentials, and AWS_PROFILE=silo, or run from the directory that holds .silo/.)"
            )
        return f"(silo signed with key {self.credentials.access_key}, from {self.credentials.source}.)"


AUTH_ERRORS = ("MissingAuthenticationTokenException", "UnrecognizedClientException", "InvalidSignatureException")


def function_path(name: str, suffix: str = "") -> str:
    return f"/2015-03-31/functions/{urllib.parse.quote(name, safe='')}{suffix}"
