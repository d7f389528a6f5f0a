"""The runtime's client of the Runtime API: one persistent HTTP/1.1 connection, no timeout.

A few lines over a raw socket instead of http.client: http.client imports email and ssl, which
cost 23-37 ms at every cold start, and it parses every response's headers with email.feedparser.
The only server this ever talks to is silo's RuntimeChannel (Content-Length bodies, keep-alive).
"""

from __future__ import annotations

import mmap
import select
import socket

# Mirror of silo/runtime_api/paths.py, which this runtime cannot import; a unit test keeps them equal.
NEXT = "/2018-06-01/runtime/invocation/next"
INVOCATION_PREFIX = "/2018-06-01/runtime/invocation/"
INIT_ERROR = "/2018-06-01/runtime/init/error"
REQUEST_ID = "Lambda-Runtime-Aws-Request-Id"
DEADLINE_MS = "Lambda-Runtime-Deadline-Ms"
INVOKED_FUNCTION_ARN = "Lambda-Runtime-Invoked-Function-Arn"
TRACE_ID = "Lambda-Runtime-Trace-Id"
CLIENT_CONTEXT = "Lambda-Runtime-Client-Context"
COGNITO_IDENTITY = "Lambda-Runtime-Cognito-Identity"
TENANT_ID = "Lambda-Runtime-Aws-Tenant-Id"
FUNCTION_ERROR_TYPE = "Lambda-Runtime-Function-Error-Type"
TENANT_TOKEN_HEADER = "Silo-Tenant-Token"  # silo's own: the tenant token, with each invocation
POSTGRES_USER_HEADER = "Silo-Postgres-User"  # silo's own: the tenant's PostgreSQL login, with each invocation
POSTGRES_PASSWORD_HEADER = "Silo-Postgres-Password"

# The names as the answer's headers are keyed here (lower case).
_REQUEST_ID = REQUEST_ID.lower()
_DEADLINE_MS = DEADLINE_MS.lower()
_INVOKED_FUNCTION_ARN = INVOKED_FUNCTION_ARN.lower()
_TRACE_ID = TRACE_ID.lower()
_CLIENT_CONTEXT = CLIENT_CONTEXT.lower()
_COGNITO_IDENTITY = COGNITO_IDENTITY.lower()
_TENANT_ID = TENANT_ID.lower()
_TENANT_TOKEN = TENANT_TOKEN_HEADER.lower()
_POSTGRES_USER = POSTGRES_USER_HEADER.lower()
_POSTGRES_PASSWORD = POSTGRES_PASSWORD_HEADER.lower()

_MAX_HEAD = 1 << 20
# Answers are read into one buffer kept for the life of the process. `sock.recv(n)` would allocate n
# bytes for every read: above glibc's mmap threshold that is an mmap, a page fault and an munmap per
# call. An anonymous map takes memory only for the pages a read has filled, never for the rest.
_RECV = 256 * 1024
# A read that has to wait first waits in poll() for readable data only. A thread blocked in recv() on a
# local (AF_UNIX) stream socket is also woken each time the platform reads what this process wrote (the
# kernel signals write space on the same wait queue), only to find nothing and sleep again: a second
# wake-up, and a second context switch, per invocation. poll() asked for POLLIN ignores that signal.
_READABLE = select.POLLIN


class RuntimeClientError(Exception):
    """The Runtime API could not be reached, or answered something this client cannot read."""


class _StaleConnection(Exception):
    """The server closed a kept-alive connection before this request got any answer."""


class InvocationRequest:
    """One invocation as GET /next delivered it."""

    __slots__ = (
        "body",
        "client_context",
        "cognito_identity",
        "content_type",
        "deadline_ms",
        "invoked_function_arn",
        "postgres_password",
        "postgres_user",
        "request_id",
        "tenant_id",
        "tenant_token",
        "trace_id",
    )

    def __init__(self, headers: dict[str, str], body: bytes) -> None:
        get = headers.get
        self.request_id = get(_REQUEST_ID, "")
        self.deadline_ms = int(get(_DEADLINE_MS) or 0)
        self.invoked_function_arn = get(_INVOKED_FUNCTION_ARN)
        self.trace_id = get(_TRACE_ID)
        self.client_context = get(_CLIENT_CONTEXT)
        self.cognito_identity = get(_COGNITO_IDENTITY)
        self.tenant_id = get(_TENANT_ID)
        self.tenant_token = get(_TENANT_TOKEN)
        self.postgres_user = get(_POSTGRES_USER)
        self.postgres_password = get(_POSTGRES_PASSWORD)
        self.content_type = get("content-type", "application/json")
        self.body = body


class RuntimeClient:
    """`connection_fd`: an open connection to the Runtime API to use first (a local socket the platform
    made); once it is closed, the client connects to `address` over TCP as usual."""

    def __init__(self, address: str, connection_fd: int = -1) -> None:
        host, _, port = address.rpartition(":")
        self._address = (host.strip("[]") or "127.0.0.1", int(port))
        self._host = address
        self._sock: socket.socket | None = None
        self._readable: select.poll | None = None
        if connection_fd >= 0:
            self._use(socket.socket(fileno=connection_fd))
        self._buf = bytearray()
        self._recv_view: memoryview | None = None
        self._next_sent = False

    def wait_next_invocation(self) -> InvocationRequest:
        """Block until the platform hands over an invocation. The long poll never times out."""
        answer = self._pending_next() if self._next_sent else None
        status, headers, body = answer if answer is not None else self._call("GET", NEXT)
        if status != 200:
            raise RuntimeClientError(f"GET next answered {status}: {body[:200]!r}")
        return InvocationRequest(headers, body)

    def post_invocation_result(self, request_id: str, body: bytes, content_type: str) -> int:
        path = INVOCATION_PREFIX + request_id + "/response"
        return self._call("POST", path, body, f"Content-Type: {content_type}\r\n", then_next=True)[0]

    def post_invocation_error(self, request_id: str, error_doc: bytes) -> int:
        # Like awslambdaric, no error-type header: the body is what the caller sees.
        path = INVOCATION_PREFIX + request_id + "/error"
        return self._call("POST", path, error_doc, "Content-Type: application/json\r\n", then_next=True)[0]

    def post_init_error(self, error_doc: bytes, error_type: str) -> int:
        extra = f"Content-Type: application/json\r\n{FUNCTION_ERROR_TYPE}: {error_type}\r\n"
        return self._call("POST", INIT_ERROR, error_doc, extra)[0]

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            self._readable = None
        del self._buf[:]

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(self._address)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._use(sock)
        return sock

    def _use(self, sock: socket.socket) -> None:
        self._sock = sock
        self._readable = select.poll()
        self._readable.register(sock, _READABLE)

    def _recv_into(self, sock: socket.socket, view: memoryview) -> int:
        if self._readable is not None:  # set with the socket it waits on (_use)
            self._readable.poll()
        return sock.recv_into(view)

    def _pending_next(self) -> tuple[int, dict[str, str], bytes] | None:
        """The answer to a GET /next sent ahead with the last result; None when it has to be sent again."""
        self._next_sent = False
        if self._sock is None:
            return None
        try:
            return self._read_answer(self._sock)
        except _StaleConnection:
            self.close()
            return None
        except OSError as exc:
            self.close()
            raise RuntimeClientError(f"Runtime API connection failed: {exc}") from exc

    def _call(
        self, method: str, path: str, body: bytes = b"", extra: str = "", then_next: bool = False
    ) -> tuple[int, dict[str, str], bytes]:
        """One request and its answer. `then_next`: send GET /next in the same write, right behind it (HTTP/1.1
        pipelining), for wait_next_invocation to read: one system call and one wake-up less per invocation."""
        head = f"{method} {path} HTTP/1.1\r\nHost: {self._host}\r\n{extra}Content-Length: {len(body)}\r\n\r\n"
        tail = f"GET {NEXT} HTTP/1.1\r\nHost: {self._host}\r\nContent-Length: 0\r\n\r\n" if then_next else ""
        # Only GET /next is safe to send twice; a POST that may have arrived is never repeated.
        may_retry = method == "GET"
        while True:
            sock = self._sock if self._sock is not None else self._connect()
            try:
                if len(body) < 65536:
                    sock.sendall(head.encode("utf-8") + body + tail.encode())
                else:
                    sock.sendall(head.encode("utf-8"))
                    sock.sendall(body + tail.encode())
                answer = self._read_answer(sock)
                # A server that closed after answering did not read what followed; the GET goes again.
                self._next_sent = bool(tail) and self._sock is not None
                return answer
            except (_StaleConnection, BrokenPipeError, ConnectionResetError) as exc:
                # Closed by the server while kept alive: nothing was answered, so a GET may go again.
                self.close()
                if not may_retry:
                    raise RuntimeClientError("the Runtime API closed the connection") from exc
                may_retry = False
            except OSError as exc:
                self.close()
                raise RuntimeClientError(f"Runtime API connection failed: {exc}") from exc

    def _read_answer(self, sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
        buf = self._buf
        got_any = bool(buf)
        while True:
            end = buf.find(b"\r\n\r\n")
            while end < 0:
                if len(buf) > _MAX_HEAD:
                    raise RuntimeClientError("answer head too large")
                view = self._recv_view
                if view is None:
                    view = self._recv_view = memoryview(mmap.mmap(-1, _RECV))
                n = self._recv_into(sock, view)
                if not n:
                    if not got_any:
                        raise _StaleConnection()
                    raise RuntimeClientError("the Runtime API closed the connection mid-answer")
                got_any = True
                buf += view[:n]
                end = buf.find(b"\r\n\r\n")
            # Names are ASCII; values may carry UTF-8 (a client context's JSON). One decoding for the head.
            lines = buf[:end].decode("utf-8", "replace").split("\r\n")
            del buf[: end + 4]
            try:
                status = int(lines[0].split(None, 2)[1])
            except (IndexError, ValueError):
                raise RuntimeClientError(f"bad status line {lines[0][:100]!r}") from None
            if 100 <= status < 200:
                continue  # an interim answer; the real one follows
            break
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        if len(buf) >= length:
            body = bytes(buf[:length])
            del buf[:length]
        else:
            body = self._read_body(sock, length)
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, headers, body

    def _read_body(self, sock: socket.socket, length: int) -> bytes:
        body = bytearray(length)
        view = memoryview(body)
        have = len(self._buf)
        view[:have] = self._buf
        del self._buf[:]
        while have < length:
            n = self._recv_into(sock, view[have:])
            if n == 0:
                raise RuntimeClientError("the Runtime API closed the connection mid-body")
            have += n
        return bytes(body)
