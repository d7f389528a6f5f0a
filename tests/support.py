"""A real `silo serve` for the tests, driven by boto3 and the AWS CLI; fixtures live in tests/conftest.py."""

from __future__ import annotations

import base64
import configparser
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

import boto3
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials as BotoCredentials

from silo.cli.client import Client
from silo.cli.credentials import Credentials
from silo.types import FunctionSpec

# What every client of a test server is given besides its key (SiloServer.aws_env() adds the key).
CREDENTIALS = {"AWS_DEFAULT_REGION": "us-east-1"}
ROLE = "arn:aws:iam::000000000000:role/silo-test"
# awslambdaric and what it needs, pinned with hashes (`make lock`), for the tests that install it.
AWSLAMBDARIC_REQUIREMENTS = Path(__file__).resolve().parents[1] / "requirements" / "awslambdaric.txt"
# How many times longer to wait for servers and answers: the cgroup-v2 VM (tests/cgroup2) runs everything 15-40
# times slower than a host does.
TIME_SCALE = float(os.environ.get("SILO_TEST_TIME_SCALE", "1"))
# The administrator key of each running test server, by endpoint (its data directory's credentials file).
_KEYS: dict[str, tuple[str, str]] = {}
# What a client of a server run with --auth none signs with: the server reads no signature.
UNCHECKED = ("silo-test", "silo-test")


def credentials_of(endpoint: str) -> tuple[str, str]:
    """The administrator key of the test server at `endpoint` (any key, if it runs with --auth none)."""
    return _KEYS.get(endpoint.rstrip("/"), UNCHECKED)


def aws_env(endpoint: str) -> dict[str, str]:
    """The environment that gives the AWS CLI, boto3 and the silo CLI the test server's administrator key."""
    key, secret = credentials_of(endpoint)
    return {**CREDENTIALS, "AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret}


def api_client(endpoint: str) -> Client:
    """silo's own HTTP client (the CLI's) of the test server at `endpoint`, signing with its administrator key."""
    key, secret = credentials_of(endpoint)
    return Client(endpoint, credentials=Credentials(key, secret, "us-east-1", "the test server's credentials"))


def signed_headers(
    endpoint: str, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> dict[str, str]:
    """`headers` and the SigV4 headers botocore adds to sign a request of `path` (with its query) to
    `endpoint`, as boto3 would sign it with the server's administrator key."""
    key, secret = credentials_of(endpoint)
    request = AWSRequest(method=method, url=endpoint.rstrip("/") + path, data=body, headers=dict(headers or {}))
    SigV4Auth(BotoCredentials(key, secret), "lambda", "us-east-1").add_auth(request)
    return dict(request.headers.items())


def signed_request(
    endpoint: str,
    path: str,
    data: bytes | None = None,
    method: str | None = None,
    headers: dict[str, str] | None = None,
) -> urllib.request.Request:
    """A urllib request of `path` to `endpoint`, signed with the server's administrator key."""
    verb = method or ("POST" if data is not None else "GET")
    return urllib.request.Request(
        endpoint.rstrip("/") + path,
        data=data,
        method=verb,
        headers=signed_headers(endpoint, verb, path, data or b"", headers),
    )


def signed_head(
    endpoint: str,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    host: str = "silo",
) -> bytes:
    """The head of an HTTP/1.1 request signed for `body` (not included: the caller writes it, or not), for
    tests that speak HTTP over a socket themselves. Content-Length is the body's unless `headers` gives one."""
    fields = {"Host": host, **(headers or {})}
    if body and not any(name.lower() == "content-length" for name in fields):
        fields["Content-Length"] = str(len(body))
    signed = signed_headers(endpoint, method, path, body, fields)
    lines = [f"{method} {path} HTTP/1.1", *(f"{name}: {value}" for name, value in signed.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class SignedBy(requests.auth.AuthBase):
    """requests' auth that signs each request with the test server's administrator key (`auth=SignedBy(url)`)."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        key, secret = credentials_of(self.endpoint)
        body = r.body if isinstance(r.body, bytes) else (r.body or "").encode()
        request = AWSRequest(method=r.method, url=r.url, data=body, headers=dict(r.headers))
        SigV4Auth(BotoCredentials(key, secret), "lambda", "us-east-1").add_auth(request)
        r.headers.update({k: v for k, v in request.headers.items() if k.lower() in ("authorization", "x-amz-date")})
        return r


def listening_socket() -> socket.socket:
    """A TCP socket listening on a free loopback port, as a Runtime API channel is given one."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SiloServer:
    """One `silo serve` process; `restart()` stops it and starts a new one on the same data dir."""

    def __init__(self, data_dir: Path, *extra_args: str, env: dict[str, str] | None = None) -> None:
        self.extra_args = list(extra_args)
        self.env = dict(env or {})  # added to the server's environment
        self.data_dir = data_dir
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir.parent / "silo-serve.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "silo",
                "serve",
                "--port",
                str(self.port),
                "--data-dir",
                str(self.data_dir),
                *self.extra_args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **CREDENTIALS, **self.env},
        )
        log.close()
        deadline = time.monotonic() + 30 * TIME_SCALE
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"silo serve exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    self._learn_key()
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"silo serve did not listen within {30 * TIME_SCALE:.0f} s:\n{self.log()}")

    def _learn_key(self) -> None:
        """The administrator key the server wrote to its credentials file before it listened."""
        parser = configparser.RawConfigParser()
        if parser.read(self.credentials_file) and parser.has_section("silo"):
            _KEYS[self.endpoint] = (parser["silo"]["aws_access_key_id"], parser["silo"]["aws_secret_access_key"])
        else:
            _KEYS.pop(self.endpoint, None)

    @property
    def credentials_file(self) -> Path:
        return self.data_dir / "credentials"

    @property
    def credentials(self) -> tuple[str, str]:
        return credentials_of(self.endpoint)

    def aws_env(self) -> dict[str, str]:
        """The environment that gives the AWS CLI, boto3 and the silo CLI this server's administrator key."""
        return aws_env(self.endpoint)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def make_client(endpoint: str, read_timeout: int = 120) -> Any:
    """boto3's Lambda client of the test server at `endpoint`, with its administrator key."""
    key, secret = credentials_of(endpoint)
    return boto3.client(
        "lambda",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        config=Config(read_timeout=read_timeout * TIME_SCALE, retries={"max_attempts": 1, "mode": "standard"}),
    )


def zip_files(files: dict[str, str | bytes], modes: dict[str, int] | None = None) -> bytes:
    """A code zip from {path: content}; `modes` sets unix permissions (e.g. an executable bootstrap)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in files.items():
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = (0o100000 | (modes or {}).get(name, 0o644)) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, content)
    return buf.getvalue()


def python_runtime() -> str:
    return f"python3.{sys.version_info.minor}"


def create_python_function(
    client: Any, name: str, source: str, *, per_tenant: bool = False, handler: str = "app.handler", **extra: Any
) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "FunctionName": name,
        "Runtime": python_runtime(),
        "Role": ROLE,
        "Handler": handler,
        "Code": {"ZipFile": zip_files({"app.py": source})},
        **extra,
    }
    if per_tenant:
        kwargs["TenancyConfig"] = {"TenantIsolationMode": "PER_TENANT"}
    config: dict[str, Any] = client.create_function(**kwargs)
    client.get_waiter("function_active_v2").wait(FunctionName=name)
    return config


def payload_of(response: dict[str, Any]) -> Any:
    return json.loads(response["Payload"].read())


def call(client: Any, name: str, tenant: str, event: dict[str, Any] | None = None) -> tuple[dict[str, Any], str]:
    """The function's answer and the REPORT line's Init Duration suffix (`(fork)`, or "" for a full start)."""
    response = client.invoke(
        FunctionName=name, TenantId=tenant, LogType="Tail", Payload=json.dumps(event or {}).encode()
    )
    tail = base64.b64decode(response["LogResult"]).decode()
    report = next(line for line in tail.splitlines() if line.startswith("REPORT"))
    # Read as a parser of Lambda's line would, by field: the development backend adds one after Init Duration.
    init = re.search(r"Init Duration: [\d.]+ ms(?: (\(\w+\)))?", report)
    kind = "warm" if init is None else init[1] or "ms"
    body: dict[str, Any] = payload_of(response)
    assert "FunctionError" not in response, body
    return body, kind


def forked_call(client: Any, name: str, prefix: str, event: dict[str, Any] | None = None) -> dict[str, Any]:
    """The first call of a new tenant, once the function's template is up (its first call starts it)."""
    deadline = time.monotonic() + 30 * TIME_SCALE
    n = 0
    while True:
        n += 1
        body, kind = call(client, name, f"{prefix}-{os.urandom(4).hex()}", event)
        if kind == "(fork)":
            return body
        assert kind == "ms", f"a new tenant's first call reported {kind!r}"
        assert time.monotonic() < deadline, "no environment was forked from a template within 30 s"
        time.sleep(0.2 * n)


def function_spec(name: str = "f", per_tenant: bool = True) -> FunctionSpec:
    """A function as the control plane resolves it, for tests below the API."""
    return FunctionSpec(
        function_name=name,
        function_arn=f"arn:aws:lambda:us-east-1:000000000000:function:{name}",
        version="$LATEST",
        revision_id="r",
        runtime="python3.11",
        handler="app.handler",
        code_dir=Path("/nonexistent"),
        memory_mb=128,
        timeout_s=3,
        ephemeral_mb=512,
        environment={},
        per_tenant=per_tenant,
    )
