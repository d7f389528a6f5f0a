"""Unpack an untrusted zip into an empty directory, or refuse it.

The rules, each one closing a known attack:

- a member named with an absolute path or a `..` component is refused (zip slip);
- regular files and directories are written first, while the tree holds no symlink at all, and with
  O_NOFOLLOW, so no write can be redirected through a link;
- symlinks are created last, never below another symlink, and each one must resolve inside the tree as
  the kernel resolves it (following every chain, at most 40 links, never stepping above the root on the
  way); absolute targets are refused, since `/` inside an environment is not ours;
- the bytes actually written are counted, chunk by chunk, and writing stops before the limit is
  passed: the sizes in a zip's headers are the attacker's words, not a measurement;
- every file ends read-only (0o444, or 0o555 when the zip gave it an exec bit), every directory 0o555;
- the shape of the tree is bounded from the central directory before anything is written: at most
  `MAX_MEMBERS` members, paths of at most `MAX_PATH_BYTES` bytes, `MAX_PATH_DEPTH` directories deep, with
  components of at most `MAX_NAME_BYTES`, and `MAX_TOTAL_PATH_BYTES` of paths in all. The byte limit alone
  does not bound a package's cost: a 34 MB zip of 400,000 empty files writes no byte, yet took 400,000
  inodes and 34 s to unpack, and zipfile spends about 300 MB and 3 s of the daemon reading a directory of
  560,000 entries, so members are counted before zipfile reads it.

Lambda documents no limit on the number of files (only 250 MB unzipped), so the bounds are chosen far
above what real packages hold. Measured: 374 MB of installed Python packages (boto3, the AWS CLI, mypy
and their dependencies, more than Lambda would take) are 21,237 files and directories, with paths of 48
bytes on average, 102 at most and 8 directories deep; npm with its `node_modules` is 2,413 for 19 MB.
Linux refuses a component over 255 bytes in any case.

The caller owns the directory and removes it whatever happens here.
"""

from __future__ import annotations

import ctypes
import errno
import io
import lzma
import os
import stat
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from silo.errors import InvalidParameterValueException

CHUNK = 1 << 20
MAX_SYMLINK_TARGET = 4095  # PATH_MAX less its NUL: symlink(2) refuses a longer target with an OSError
MAX_MEMBERS = 50_000
MAX_PATH_BYTES = 1024
MAX_PATH_DEPTH = 128
MAX_NAME_BYTES = 255  # NAME_MAX: the kernel refuses a longer component anyway, with an OSError
MAX_TOTAL_PATH_BYTES = 16 * 1024 * 1024
# Links the kernel follows while resolving one path before it gives up with ELOOP (MAXSYMLINKS).
MAX_LINK_HOPS = 40
_SYS_OPENAT2 = 437  # the same number on every architecture (new system calls share one table)
_RESOLVE_NO_XDEV = 0x01
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_BENEATH = 0x08
# Where zipfile reads the central directory: ending at the end record, or at the Zip64 end record and its
# locator (56 + 20 bytes) before it.
_ZIP64_RECORDS = 76
_CENTRAL_ENTRY = b"PK\x01\x02"
# Longest part of a member's name repeated in an error message.
_SHOWN = 200
CORRUPT_MESSAGE = "Could not unzip uploaded file. Please check your file, then try to upload again."

# What a broken or hostile archive can make zipfile raise while reading (bad CRC or header, truncated
# stream, unknown compression, encryption). Disk errors are OSError and are deliberately not here.
_READ_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    zlib.error,
    lzma.LZMAError,
    EOFError,
    NotImplementedError,
    RuntimeError,
    ValueError,
)


def corrupt(detail: str | None = None) -> InvalidParameterValueException:
    if detail is None:
        return InvalidParameterValueException(CORRUPT_MESSAGE)
    return InvalidParameterValueException(f"Could not unzip uploaded file: {detail}")


def too_big(limit: int) -> InvalidParameterValueException:
    return InvalidParameterValueException(f"Unzipped size must be smaller than {limit} bytes")


def too_many_members() -> InvalidParameterValueException:
    return corrupt(
        f"the package holds more than {MAX_MEMBERS} files and directories. Package fewer: bundle the code, "
        "or leave the tests, documentation and caches of its dependencies out."
    )


def _shown(name: str) -> str:
    return name if len(name) <= _SHOWN else name[:_SHOWN] + "..."


class _Budget:
    """Bytes that may still be written; taking more than is left refuses the whole package."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, n: int) -> None:
        if self.used + n > self.limit:
            raise too_big(self.limit)
        self.used += n


def _count_entries(zip_bytes: bytes) -> int:
    """At least as many as the entries zipfile will read from the central directory, without reading them.

    The end record says how long the directory is and where it ends, and every entry in it begins with
    its signature: counting signatures over that span (a byte search) bounds the entries from above.
    The end record is found by zipfile's own `_EndRecData`, so the span is the one zipfile then reads.
    """
    try:
        end = zipfile._EndRecData(io.BytesIO(zip_bytes))  # type: ignore[attr-defined]
    except (*_READ_ERRORS, OSError):
        raise corrupt() from None
    if not end:
        raise corrupt()
    size: int = end[zipfile._ECD_SIZE]  # type: ignore[attr-defined]
    location: int = end[zipfile._ECD_LOCATION]  # type: ignore[attr-defined]
    return zip_bytes.count(_CENTRAL_ENTRY, max(0, location - size - _ZIP64_RECORDS), location)


def _check_directory(infos: list[zipfile.ZipInfo]) -> None:
    """The bounds on the tree's shape, checked on the whole central directory before anything is written."""
    if len(infos) > MAX_MEMBERS:
        raise too_many_members()
    total = 0
    for info in infos:
        total += len(info.filename.encode("utf-8", "surrogateescape"))
        if total > MAX_TOTAL_PATH_BYTES:
            raise corrupt(
                f"the paths of the package's members add up to more than {MAX_TOTAL_PATH_BYTES} bytes. "
                "Package fewer files, or give them shorter paths."
            )


def _parts(name: str) -> tuple[str, ...]:
    """The path components of a member, or a refusal when it would land outside the tree or is too long."""
    if name.startswith("/"):
        raise corrupt(f"member '{_shown(name)}' has an absolute path")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise corrupt(f"member '{_shown(name)}' points outside the package")
    if len(name.encode("utf-8", "surrogateescape")) > MAX_PATH_BYTES:
        raise corrupt(f"member '{_shown(name)}' has a path longer than {MAX_PATH_BYTES} bytes")
    if len(parts) > MAX_PATH_DEPTH:
        raise corrupt(f"member '{_shown(name)}' is nested more than {MAX_PATH_DEPTH} directories deep")
    if any(len(p.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES for p in parts):
        raise corrupt(f"member '{_shown(name)}' has a file or directory name longer than {MAX_NAME_BYTES} bytes")
    return parts


def _kind(info: zipfile.ZipInfo) -> str:
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return "link"
    if info.is_dir() or stat.S_ISDIR(mode):
        return "dir"
    return "file"


def _chunks(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> Iterator[bytes]:
    try:
        with zf.open(info) as src:
            while True:
                chunk = src.read(CHUNK)
                if not chunk:
                    return
                yield chunk
    except (*_READ_ERRORS, OSError):
        # Only the archive in memory is read here, so an OSError is a broken stream, not a disk: bz2
        # reports one as OSError("Invalid data stream"). The writes happen in the caller, outside this.
        raise corrupt() from None


def _write_file(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, budget: _Budget) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(target, flags, 0o600)
    try:
        for chunk in _chunks(zf, info):
            budget.take(len(chunk))
            _write_all(fd, chunk)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _link_target(zf: zipfile.ZipFile, info: zipfile.ZipInfo, budget: _Budget) -> str:
    raw = b""
    for chunk in _chunks(zf, info):
        raw += chunk
        if len(raw) > MAX_SYMLINK_TARGET:
            raise corrupt(f"symlink '{_shown(info.filename)}' has an oversized target")
    budget.take(len(raw))
    if not raw or b"\0" in raw:
        raise corrupt(f"symlink '{_shown(info.filename)}' has an invalid target")
    return raw.decode("utf-8", "surrogateescape")


def _make_link(root: Path, parts: tuple[str, ...], target: str, name: str) -> None:
    if target.startswith("/"):
        raise corrupt(f"symlink '{_shown(name)}' points outside the package")
    # Lexical check first, so a plainly escaping link is never even created.
    resolved = PurePosixPath(os.path.normpath(PurePosixPath(*parts[:-1], target)))
    if resolved.parts[:1] == ("..",):
        raise corrupt(f"symlink '{_shown(name)}' points outside the package")
    # Creating the link (or its parent directories) must not walk through an earlier link.
    current = root
    for part in parts[:-1]:
        current = current / part
        if current.is_symlink():
            raise corrupt(f"member '{_shown(name)}' is placed below a symlink")
    (root / PurePosixPath(*parts[:-1])).mkdir(parents=True, exist_ok=True)
    os.symlink(target, root.joinpath(*parts))


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _resolve_beneath(root_fd: int, path: str) -> int:
    """0 when `path` resolves inside the directory `root_fd` (or dangles without leaving it), else the errno:
    EXDEV when it leaves, ELOOP past 40 links.

    The kernel resolves it (openat2 with RESOLVE_BENEATH, Linux 5.6): every link followed, every `..`
    checked against the root as it is walked, so a link that steps out and back in by the root's own name
    is refused too. Not `realpath`: it follows the rest of a chain again for each link of it and recurses
    once per link, so checking a chain of 500 links took a second and one of 1,000 raised RecursionError.
    """
    how = _OpenHow(os.O_PATH | os.O_CLOEXEC, 0, _RESOLVE_BENEATH | _RESOLVE_NO_MAGICLINKS | _RESOLVE_NO_XDEV)
    fd = _libc.syscall(_SYS_OPENAT2, root_fd, os.fsencode(path), ctypes.byref(how), ctypes.sizeof(how))
    if fd < 0:
        err = ctypes.get_errno()
        # A missing component stops the walk before it could leave the tree, here and wherever the
        # tree is used: a dangling link is harmless.
        return 0 if err in (errno.ENOENT, errno.ENOTDIR) else err
    os.close(fd)
    return 0


def _check_links_resolve_inside(root: Path, links: list[tuple[zipfile.ZipInfo, tuple[str, ...]]]) -> None:
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for info, parts in links:
            err = _resolve_beneath(root_fd, "/".join(parts))
            if not err:
                continue
            name = _shown(info.filename)
            if err in (errno.ENOSYS, errno.EPERM):
                # No openat2 (before Linux 5.6, or a seccomp profile that does not know it): fail closed.
                raise corrupt(
                    "this host cannot check where symlinks lead (openat2 needs Linux 5.6 or later), so "
                    "packages with symlinks are refused here. Replace the symlinks with the files they name."
                )
            if err == errno.ELOOP:
                raise corrupt(f"symlink '{name}' does not resolve within {MAX_LINK_HOPS} links (a chain or a loop)")
            if err == errno.EXDEV:
                raise corrupt(f"symlink '{name}' points outside the package")
            raise corrupt(f"symlink '{name}' does not resolve: {os.strerror(err)}")
    finally:
        os.close(root_fd)


def _finish_modes(root: Path, executables: set[Path]) -> None:
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        base = Path(dirpath)
        for name in filenames:
            path = base / name
            if path.is_symlink():
                continue
            os.chmod(path, 0o555 if path in executables else 0o444)
        for name in dirnames:
            path = base / name
            if not path.is_symlink():
                os.chmod(path, 0o555)
    # `root` itself stays writable: the caller renames it into place first (see CodeStore).


def unpack(zip_bytes: bytes, root: Path, limit: int) -> int:
    """Unpack `zip_bytes` into the empty directory `root`; returns the bytes written.

    Raises InvalidParameterValueException for a corrupt or unsafe zip, or one that unpacks past `limit`.
    """
    if _count_entries(zip_bytes) > MAX_MEMBERS:
        raise too_many_members()
    try:
        zf = zipfile.ZipFile(io.BytesIO(zip_bytes))
        infos = zf.infolist()
    except (*_READ_ERRORS, OSError):
        raise corrupt() from None
    with zf:
        _check_directory(infos)
        members = [(info, _parts(info.filename), _kind(info)) for info in infos]
        budget = _Budget(limit)
        executables: set[Path] = set()
        links: list[tuple[zipfile.ZipInfo, tuple[str, ...]]] = []
        try:
            for info, parts, kind in members:
                if not parts:
                    continue
                target = root.joinpath(*parts)
                if kind == "dir":
                    target.mkdir(parents=True, exist_ok=True)
                elif kind == "link":
                    links.append((info, parts))
                else:
                    _write_file(zf, info, target, budget)
                    if (info.external_attr >> 16) & 0o111:
                        executables.add(target)
                    else:
                        executables.discard(target)
            for info, parts in links:
                _make_link(root, parts, _link_target(zf, info, budget), info.filename)
        except (FileExistsError, IsADirectoryError, NotADirectoryError):
            # A name used twice as different kinds (a file and a directory): not a sane package.
            raise corrupt() from None
        _check_links_resolve_inside(root, links)
    _finish_modes(root, executables)
    return budget.used
