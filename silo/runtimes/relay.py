"""pid 1 of a gVisor environment: it gives the runtime its Runtime API at 127.0.0.1:9001, then starts it.

gVisor has its own network stack, so a socket of the host cannot be handed in as the jail does.
Instead the daemon listens on a unix socket file that the sandbox sees at `upstream` (runsc's
`--host-uds=open` lets sandboxed code connect to it), and this relay, started first inside the
sandbox, listens on 127.0.0.1:9001 in the sandbox's loopback and copies each connection to that
socket. Unmodified runtimes (awslambdaric needs host:port) then work as on Lambda, where the
runtime is likewise a child of the environment's init.

Launch: `python -s -B relay.py`, with the launch document (JSON: argv, environ, cwd, port, upstream,
seccomp_filter) on stdin, so that the runtime's variables never sit in this process's own environ,
which the runtime could read in /proc/1/environ. Steps, in order:

    1. read the launch document, then point stdin at /dev/null
    2. listen on 127.0.0.1:<port> before the runtime exists, so its first connection cannot miss
    3. install silo's seccomp filter (the same policy as the jail's); it is inherited by the runtime
    4. fork and exec the runtime
    5. relay connections until the runtime exits, reaping orphans meanwhile (this is pid 1)
    6. exit the way the runtime did: same status, or the same signal

It runs inside the environment, under whatever interpreter the runtime has (Python 3.8 or later),
so it uses the standard library only and imports nothing of silo. The seccomp filter arrives
compiled (silo.jail.seccomp compiles the policy in the daemon, as for the jail); installing it takes
two system calls, done here rather than by importing silo.jail.seccomp, whose policy parser costs
about 150 ms of imports under gVisor on every start.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import sys
import threading

BUFFER = 64 * 1024
# x86_64 only, as the filter itself (its first instructions kill any other architecture).
PR_SET_NO_NEW_PRIVS = 38
NR_SECCOMP = 317
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_TSYNC = 1


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install_seccomp(program: bytes) -> None:
    """Install a compiled classic-BPF filter (an array of 8-byte sock_filter) on this process; irreversible."""
    libc = ctypes.CDLL(None, use_errno=True)
    # The runtime starts with no_new_privs already (the bundle asks for it); the kernel requires it.
    if libc.prctl(ctypes.c_int(PR_SET_NO_NEW_PRIVS), *map(ctypes.c_ulong, (1, 0, 0, 0))) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    buf = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.addressof(buf))
    result = libc.syscall(
        ctypes.c_long(NR_SECCOMP),
        ctypes.c_long(SECCOMP_SET_MODE_FILTER),
        ctypes.c_long(SECCOMP_FILTER_FLAG_TSYNC),
        ctypes.byref(fprog),
    )
    if result != 0:
        raise OSError(ctypes.get_errno(), f"seccomp(SET_MODE_FILTER, TSYNC) returned {result}")


def _pump(src: socket.socket, dst: socket.socket, done: threading.Semaphore) -> None:
    try:
        while True:
            data = src.recv(BUFFER)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    # Pass the end on, so a half-closed request still gets its answer; the second pump to end closes both.
    try:
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    if not done.acquire(blocking=False):
        src.close()
        dst.close()


def _serve(client: socket.socket, upstream: str) -> None:
    try:
        api = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        api.connect(upstream)
    except OSError as exc:
        sys.stderr.write(f"silo relay: cannot reach the Runtime API: {exc}\n")
        client.close()
        return
    done = threading.Semaphore(1)
    threading.Thread(target=_pump, args=(api, client, done), daemon=True).start()
    _pump(client, api, done)


def _accept(listener: socket.socket, upstream: str) -> None:
    while True:
        try:
            client, _ = listener.accept()
        except OSError:
            continue
        # Requests and answers are small and latency-bound; Nagle would hold them back.
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=_serve, args=(client, upstream), daemon=True).start()


def _wait_for(runtime: int) -> int:
    """Reap every child that ends (pid 1 inherits orphans) until the runtime does; its wait status."""
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except InterruptedError:
            continue
        if pid == runtime:
            return status


def main() -> None:
    doc = json.loads(sys.stdin.buffer.read())
    devnull = os.open("/dev/null", os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", int(doc["port"])))
    listener.listen(16)
    # Before the fork, so the runtime and everything it starts inherit it; the relay needs nothing it denies.
    # Never skipped: a daemon that sent no filter gets no runtime.
    program = bytes.fromhex(doc.get("seccomp_filter") or "")
    if not program:
        sys.stderr.write("silo: the environment's seccomp filter is empty; an environment never runs without one\n")
        os._exit(126)
    install_seccomp(program)
    argv = [str(a) for a in doc["argv"]]
    runtime = os.fork()
    if runtime == 0:
        try:
            listener.close()
            os.chdir(doc["cwd"])
            os.execve(argv[0], argv, doc["environ"])
        except OSError as exc:
            sys.stderr.write(f"silo: could not start the runtime {argv[0]}: {exc}\n")
        os._exit(127)
    threading.Thread(target=_accept, args=(listener, doc["upstream"]), daemon=True).start()
    status = _wait_for(runtime)
    if os.WIFSIGNALED(status):
        # Die of the same signal, so the daemon sees what killed the runtime (SIGKILL for an OOM kill).
        sig = os.WTERMSIG(status)
        if sig not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)


if __name__ == "__main__":
    main()
