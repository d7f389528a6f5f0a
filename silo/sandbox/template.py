"""The daemon's side of templates: start them, ask them to fork, learn how their children end, replace them.

A template (silo/jail/template.py) is started per runtime the first time an environment of that runtime
is launched, off that launch's path, or at start for the runtimes the deployed functions use (`warm`);
until it is ready, environments start from nothing. Each template forks at most `max_forks` environments:
the hash seed and the address-space layout are fixed when it starts and shared by everything it forks, so
a replacement is started once that many are out, and the old template, drained, ends once the last of its
environments has.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from silo.sandbox.child import ExitWatch

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 10.0
FORK_TIMEOUT_S = 5.0
DEFAULT_MAX_FORKS = 256


class TemplateUnavailable(OSError):
    """The template could not fork: the launch starts the environment from nothing instead."""


@dataclass(frozen=True, slots=True)
class TemplateCommand:
    """How to start the template of one kind of environment."""

    argv: list[str]  # the interpreter and its flags; the socket's descriptor is appended
    runtime_dir: str = ""  # silo's built-in Python runtime, for the template to import and run in-process
    lang_prefix: str = ""  # the interpreter's prefix on the host, when environments see it at /var/lang

    def command(self, fd: int) -> list[str]:
        extra = [self.runtime_dir, self.lang_prefix] if self.runtime_dir else []
        return [*self.argv, str(fd), *extra]


class ForkedChild(ExitWatch):
    """An environment's first process, forked by a template: not the daemon's child, so its exit status
    comes from the template; a pidfd, which cannot name another process, is what the daemon signals."""

    def __init__(self, pid: int, pidfd: int) -> None:
        self._pid = pid
        self._pidfd = pidfd
        self.exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    @property
    def pid(self) -> int:
        return self._pid

    def kill(self) -> None:
        if self._pidfd >= 0:
            with contextlib.suppress(ProcessLookupError, OSError):
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)

    def launcher_gone(self) -> None:
        """Once the environment is ready its launcher has left (pid 1 waits for that before it drops its
        privileges): its pidfd names nothing to kill any more, and a descriptor per environment counts
        against the daemon's open-files limit. The environment's cgroups reach everything from here."""
        if self._pidfd >= 0:
            os.close(self._pidfd)
            self._pidfd = -1

    def ended(self, code: int) -> None:
        if self._pidfd >= 0:
            os.close(self._pidfd)
            self._pidfd = -1
        if not self.exited.done():
            self.exited.set_result(code)


class Template:
    """One running template and the daemon's end of its socket."""

    def __init__(self, key: str, popen: subprocess.Popen[bytes], sock: socket.socket) -> None:
        self.key = key
        self.forks = 0
        self._popen = popen
        self._sock = sock
        self._serial = 0
        self._pending: dict[int, asyncio.Future[ForkedChild]] = {}
        self._children: dict[int, ForkedChild] = {}  # by the serial of the fork
        self._draining = False
        self.alive = True

    @classmethod
    async def start(cls, key: str, command: TemplateCommand) -> Template:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            popen = subprocess.Popen(
                command.command(theirs.fileno()),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
                start_new_session=True,
                env={},
            )
        except OSError:
            ours.close()
            raise
        finally:
            theirs.close()
        loop = asyncio.get_running_loop()
        ours.setblocking(False)
        try:
            msg = await asyncio.wait_for(loop.sock_recv(ours, 64), READY_TIMEOUT_S)
        except (TimeoutError, OSError):
            msg = b""
        if msg != b"ready":
            with contextlib.suppress(ProcessLookupError):
                os.killpg(popen.pid, signal.SIGKILL)
            await loop.run_in_executor(None, popen.wait)
            ours.close()
            raise TemplateUnavailable(f"the {key} template did not start (it exited with status {popen.returncode})")
        template = cls(key, popen, ours)
        loop.add_reader(ours.fileno(), template._on_message)
        return template

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def children(self) -> int:
        return len(self._children)

    async def fork(self, spec_fd: int, control_fd: int, output_fd: int) -> ForkedChild:
        """A new environment's first process; it takes copies of the three descriptors."""
        if not self.alive or self._draining:
            raise TemplateUnavailable(f"the {self.key} template takes no more forks")
        self._serial += 1
        serial = self._serial
        future: asyncio.Future[ForkedChild] = asyncio.get_running_loop().create_future()
        self._pending[serial] = future
        try:
            socket.send_fds(self._sock, [b"fork %d" % serial], [spec_fd, control_fd, output_fd])
        except OSError as exc:
            del self._pending[serial]
            raise TemplateUnavailable(f"the {self.key} template cannot be reached: {exc}") from exc
        self.forks += 1
        try:
            return await asyncio.wait_for(asyncio.shield(future), FORK_TIMEOUT_S)
        except TimeoutError:
            # It may still fork: a child nobody waits for any more is killed when it is announced.
            raise TemplateUnavailable(f"the {self.key} template did not fork within {FORK_TIMEOUT_S:.0f} s") from None
        finally:
            self._pending.pop(serial, None)

    def drain(self) -> None:
        """Take no more forks; the template exits once its last environment has ended."""
        if self._draining or not self.alive:
            return
        self._draining = True
        with contextlib.suppress(OSError):
            self._sock.send(b"drain")

    def kill(self) -> None:
        """End the template now; its environments die with it (their death signal)."""
        self._draining = True
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._popen.pid, signal.SIGKILL)
        self._popen.wait()  # at once: SIGKILL cannot be ignored

    def _on_message(self) -> None:
        while True:
            try:
                msg, fds, _, _ = socket.recv_fds(self._sock, 256, 1)
            except BlockingIOError:
                return
            except OSError:
                msg, fds = b"", []
            if not msg:
                self._gone()
                return
            words = msg.split(maxsplit=2)
            if words[0] == b"forked" and len(words) == 3 and len(fds) == 1:
                # Known by the serial of its fork, as the template reports its end: a pid is reused.
                child = ForkedChild(int(words[2]), fds[0])
                self._children[int(words[1])] = child
                future = self._pending.get(int(words[1]))
                if future is not None and not future.done():
                    future.set_result(child)
                else:
                    child.kill()  # asked for by a launch that gave up
            elif words[0] == b"exit" and len(words) == 3:
                ended = self._children.pop(int(words[1]), None)
                if ended is not None:
                    ended.ended(int(words[2]))
            elif words[0] == b"failed" and len(words) >= 2:
                for fd in fds:
                    os.close(fd)
                future = self._pending.get(int(words[1])) if words[1].isdigit() else None
                reason = words[2].decode(errors="replace") if len(words) == 3 else "no reason given"
                if future is not None and not future.done():
                    future.set_exception(TemplateUnavailable(f"the {self.key} template could not fork: {reason}"))
            else:
                for fd in fds:
                    os.close(fd)
                log.error("template %s sent something unexpected: %r", self.key, msg[:200])

    def _gone(self) -> None:
        """The template ended: its environments ended with it (they die with their parent)."""
        if not self.alive:
            return
        self.alive = False
        loop = asyncio.get_running_loop()
        loop.remove_reader(self._sock.fileno())
        self._sock.close()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(TemplateUnavailable(f"the {self.key} template ended"))
        for child in self._children.values():
            child.kill()
            child.ended(-signal.SIGKILL)
        self._children.clear()
        if not self._draining:
            log.warning("template %s (pid %d) ended unexpectedly; the next launch starts another", self.key, self.pid)
        # Reap it without blocking the loop.
        loop.run_in_executor(None, self._popen.wait)


class Templates:
    """The current template of every kind of environment, started on first need and replaced after `max_forks`."""

    def __init__(self, command_for: Callable[[str], TemplateCommand | None], max_forks: int = DEFAULT_MAX_FORKS):
        self._command_for = command_for
        self._max_forks = max(1, max_forks)
        self._current: dict[str, Template] = {}
        self._starting: dict[str, asyncio.Task[None]] = {}
        self._retired: set[Template] = set()
        self._failures: dict[str, int] = {}
        self._without: set[str] = set()  # kinds that have no template (asked once, not at every launch)
        self._warming: set[str] = set()  # kinds asked for ahead whose first template is not up yet

    def ready(self, key: str) -> Template | None:
        """The template to fork from now, or None (one is then started, when it can be, for next time)."""
        template = self._current.get(key)
        if template is not None and not template.alive:
            del self._current[key]
            template = None
        if template is None or template.forks >= self._max_forks:
            self._start_soon(key)
        if template is not None and template.forks < 2 * self._max_forks:
            return template
        return None

    def warm(self, keys: Iterable[str]) -> None:
        """Start the templates of these kinds now, ahead of their first launch; `unready` says until when."""
        for key in keys:
            current = self._current.get(key)
            if (current is not None and current.alive) or key in self._without or self._failures.get(key, 0) >= 3:
                continue
            self._warming.add(key)
            self._start_soon(key)

    def unready(self) -> str | None:
        """Which kinds `warm` asked for still wait for their first template; None when none does. A kind whose
        template failed three times is not waited for: its environments start from nothing (logged)."""
        if not self._warming:
            return None
        return f"the templates of {', '.join(sorted(self._warming))} are starting"

    def _start_soon(self, key: str) -> None:
        if key in self._starting or key in self._without or self._failures.get(key, 0) >= 3:
            return
        command = self._command_for(key)
        if command is None:
            self._without.add(key)
            self._warming.discard(key)
            return
        self._starting[key] = asyncio.get_running_loop().create_task(self._start(key, command))

    async def _start(self, key: str, command: TemplateCommand) -> None:
        try:
            template = await Template.start(key, command)
        except OSError as exc:
            failures = self._failures[key] = self._failures.get(key, 0) + 1
            if failures >= 3:
                self._warming.discard(key)
                log.error("%s; environments of %s start from nothing from now on", exc, key)
            elif key in self._warming:
                log.warning("%s; retrying", exc)
                asyncio.get_running_loop().call_soon(self._start_soon, key)
            else:
                log.warning("%s; retrying at the next launch", exc)
            return
        finally:
            self._starting.pop(key, None)
        self._failures.pop(key, None)
        self._warming.discard(key)
        old = self._current.get(key)
        self._current[key] = template
        if old is not None:
            old.drain()
            self._retired.add(old)
        self._retired = {t for t in self._retired if t.alive}
        log.info("template %s ready (pid %d)", key, template.pid)

    def live(self) -> list[Template]:
        return [t for t in (*self._current.values(), *self._retired) if t.alive]

    async def close(self) -> None:
        for task in list(self._starting.values()):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for template in self.live():
            template.kill()
        self._current.clear()
        self._retired.clear()
