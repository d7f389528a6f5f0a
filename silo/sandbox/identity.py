"""Unix identities of environments: each live environment runs as a uid/gid no other one has.

Several daemons may share a host (one per data directory; tests run dozens). Each backend of each
daemon takes a slot of its own from a host-wide registry, and everything host-wide it makes is named
or numbered from that slot: its uid range, its cgroup parent, its veths and its firewall table. A
slot is allocated, never hashed from a path, so no two daemons can be given the same one:

- the registry, `/run/silo/slots.json`, maps the directory a backend owns (resolved) to its slot,
  so a daemon started again on the same data directory gets the slot it had, and with it the
  names under which its previous run's leftovers are swept;
- a live daemon holds an exclusive lock on its slot's lock file (`/run/silo/slots/<n>.lock`) for
  as long as it runs; the kernel drops the lock when the process ends, however it ends. A slot is
  taken only with its lock, so even a lost or corrupt registry cannot hand a running daemon's slot
  to another one;
- a slot whose directory is gone and whose lock nobody holds is given to the next daemon that needs
  one (tests start servers on temporary directories by the hundred);
- the registry is rewritten atomically under a lock of its own; when it cannot be written, or all
  slots are taken, the daemon does not start.

It lives under /run, which does not outlive a reboot, and neither does anything a slot names.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# Far above the ids a distribution hands out to people and services, below the 2^31 edge: each slot
# has a range of its own, so no two live environments on the host share a uid.
UID_BASE = 1_000_000
UID_COUNT = 100_000
INSTANCE_SLOTS = 1024
REGISTRY_DIR = Path("/run/silo")
REGISTRY_FILE = "slots.json"


class IdentityUnavailable(Exception):
    """No slot can be given to this daemon; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class Identity:
    """One backend's slot on this host, held while its lock file is open."""

    owner: str  # the directory the backend owns, resolved
    slot: int
    lock_fd: int

    @property
    def instance(self) -> str:
        """The name of this slot in cgroup parents, link and table names; never a hex hash, so it cannot
        meet the names earlier versions derived from a path."""
        return f"i{self.slot:03x}"

    @property
    def uid_base(self) -> int:
        """The first uid of this slot's range."""
        return UID_BASE + self.slot * UID_COUNT


# The identities this process holds, by owner: asked again (a backend made twice in one process), the
# same one is returned. They also keep the lock files open for as long as the process lives.
_held: dict[str, Identity] = {}


def claim(owner: Path, registry: Path = REGISTRY_DIR, slots: int = INSTANCE_SLOTS) -> Identity:
    """The slot of the backend that owns `owner`: the one it had, else the first free one.

    Raises IdentityUnavailable when another live daemon uses `owner`, every slot is taken, or the
    registry cannot be written."""
    key = str(owner.resolve())
    if key in _held:
        return _held[key]
    try:
        (registry / "slots").mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise IdentityUnavailable(f"cannot create silo's slot registry {registry}: {exc}") from exc
    with _registry_locked(registry):
        entries = _read(registry / REGISTRY_FILE)
        held = {i.slot for i in _held.values()}
        # Forget the slots of directories that are gone, unless a live daemon still holds the lock.
        for path, n in list(entries.items()):
            if path != key and n not in held and not os.path.exists(path) and _is_free(registry, n):
                del entries[path]
        if key in entries:
            slot = entries[key]
            locked = _try_lock(registry, slot)
            if locked is None:
                raise IdentityUnavailable(
                    f"another silo daemon is running on {key}; stop it first, or give this one a data "
                    "directory of its own"
                )
            fd = locked
        else:
            slot, fd = _first_free(registry, slots, set(entries.values()) | held)
            entries[key] = slot
        try:
            _write(registry / REGISTRY_FILE, entries)
        except OSError as exc:
            os.close(fd)
            raise IdentityUnavailable(f"cannot record this daemon's slot in {registry / REGISTRY_FILE}: {exc}") from exc
    identity = Identity(key, slot, fd)
    _held[key] = identity
    return identity


def release(identity: Identity) -> None:
    """The daemon's backend has closed: its slot's lock goes (the slot stays recorded for its owner)."""
    if _held.get(identity.owner) is identity:
        del _held[identity.owner]
        os.close(identity.lock_fd)


def instance_of(owner: Path, registry: Path = REGISTRY_DIR) -> str:
    """The instance recorded for `owner` (for tests and tools that look at a daemon from outside)."""
    slot = _read(registry / REGISTRY_FILE).get(str(owner.resolve()))
    if slot is None:
        raise LookupError(f"no silo daemon has a slot for {owner}")
    return f"i{slot:03x}"


@contextlib.contextmanager
def _registry_locked(registry: Path) -> Iterator[None]:
    try:
        fd = os.open(registry / "slots.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise IdentityUnavailable(f"cannot open silo's slot registry lock in {registry}: {exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _read(path: Path) -> dict[str, int]:
    try:
        raw = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise IdentityUnavailable(f"cannot read silo's slot registry {path}: {exc}") from exc
    try:
        doc = json.loads(raw)
        entries = {str(k): int(v) for k, v in doc["slots"].items()}
    except (ValueError, TypeError, KeyError, AttributeError):
        # Running daemons keep their slots all the same: each holds its slot's lock.
        log.warning("silo's slot registry %s was unreadable; it is written anew", path)
        return {}
    return entries


def _write(path: Path, entries: dict[str, int]) -> None:
    part = path.with_suffix(".part")
    with open(part, "w") as f:
        json.dump({"slots": entries}, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(part, path)


def _try_lock(registry: Path, slot: int) -> int | None:
    """An open, exclusively locked descriptor of the slot's lock file, or None when a live process holds it."""
    try:
        fd = os.open(registry / "slots" / f"{slot}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise IdentityUnavailable(f"cannot open the lock of slot {slot} in {registry}: {exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _is_free(registry: Path, slot: int) -> bool:
    fd = _try_lock(registry, slot)
    if fd is None:
        return False
    os.close(fd)
    return True


def _first_free(registry: Path, slots: int, recorded: set[int]) -> tuple[int, int]:
    # Slots recorded for a directory that still exists stay its own; a registry lost meanwhile shows
    # none, and then the locks alone keep running daemons' slots.
    for slot in range(slots):
        if slot in recorded:
            continue
        fd = _try_lock(registry, slot)
        if fd is not None:
            return slot, fd
    raise IdentityUnavailable(
        f"all {slots} slots for silo daemons on this host are taken (see {registry / REGISTRY_FILE}); "
        "delete the data directories of daemons no longer used, whose slots are then given again"
    )


class UidPool:
    """Hands out uids; one comes back only when everything that ran as it is gone."""

    def __init__(self, base: int = UID_BASE, count: int = UID_COUNT) -> None:
        self._free: deque[int] = deque(range(base, base + count))
        self._taken: set[int] = set()

    def take(self) -> int:
        if not self._free:
            raise OSError(f"all {len(self._taken)} environment uids are in use")
        uid = self._free.popleft()
        self._taken.add(uid)
        return uid

    def give_back(self, uid: int) -> None:
        if uid in self._taken:
            self._taken.remove(uid)
            # To the back of the queue: a uid is reused as late as possible.
            self._free.append(uid)

    def in_use(self) -> int:
        return len(self._taken)
