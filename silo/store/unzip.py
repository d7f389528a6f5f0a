"""Unpack an untrusted zip into an empty directory, or refuse it.

The rules, each one closing a known attack:

- a member named with an absolute path or a `..` component is refused (zip slip);
- regular files and directories are written first, while the tree holds no symlink at all, and with
  O_NOFOLLOW, so no write can be redirected through a link;
- symlinks are created last, never below another symlink, and each one must resolve (following every
  chain) inside the tree; absolute targets are refused, since `/` inside an environment is not ours;
- the bytes actually written are counted, chunk by chunk, and writing stops before the limit is
  passed: the sizes in a zip's headers are the attacker's words, not a measurement;
- every file ends read-only (0o444, or 0o555 when the zip gave it an exec bit), every directory 0o555.

The caller owns the directory and removes it whatever happens here.
"""

from __future__ import annotations

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
MAX_SYMLINK_TARGET = 4096
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


class _Budget:
    """Bytes that may still be written; taking more than is left refuses the whole package."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, n: int) -> None:
        if self.used + n > self.limit:
            raise too_big(self.limit)
        self.used += n


def _parts(name: str) -> tuple[str, ...]:
    """The path components of a member, or a refusal when it would land outside the tree."""
    if name.startswith("/"):
        raise corrupt(f"member '{name}' has an absolute path")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise corrupt(f"member '{name}' points outside the package")
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
    except _READ_ERRORS:
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
            raise corrupt(f"symlink '{info.filename}' has an oversized target")
    budget.take(len(raw))
    if not raw or b"\0" in raw:
        raise corrupt(f"symlink '{info.filename}' has an invalid target")
    return raw.decode("utf-8", "surrogateescape")


def _make_link(root: Path, parts: tuple[str, ...], target: str, name: str) -> None:
    if target.startswith("/"):
        raise corrupt(f"symlink '{name}' points outside the package")
    # Lexical check first, so a plainly escaping link is never even created.
    resolved = PurePosixPath(os.path.normpath(PurePosixPath(*parts[:-1], target)))
    if resolved.parts[:1] == ("..",):
        raise corrupt(f"symlink '{name}' points outside the package")
    # Creating the link (or its parent directories) must not walk through an earlier link.
    current = root
    for part in parts[:-1]:
        current = current / part
        if current.is_symlink():
            raise corrupt(f"member '{name}' is placed below a symlink")
    (root / PurePosixPath(*parts[:-1])).mkdir(parents=True, exist_ok=True)
    os.symlink(target, root.joinpath(*parts))


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
    try:
        zf = zipfile.ZipFile(io.BytesIO(zip_bytes))
        infos = zf.infolist()
    except (*_READ_ERRORS, OSError):
        raise corrupt() from None
    with zf:
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
        real_root = root.resolve()
        for info, parts in links:
            if not Path(os.path.realpath(root.joinpath(*parts))).is_relative_to(real_root):
                raise corrupt(f"symlink '{info.filename}' points outside the package")
    _finish_modes(root, executables)
    return budget.used
