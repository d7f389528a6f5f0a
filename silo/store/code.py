"""Content-addressed code store: each deployment package is kept once, by the sha256 of its zip.

Layout under the code directory:

    blobs/<sha256hex>.zip      the package as uploaded (GetFunction's Code.Location serves it)
    unpacked/<sha256hex>/      its contents, unpacked once and then read-only; environments mount it
    scratch/                   work in progress; anything here after a crash is garbage

A package is unpacked into `scratch/` and renamed into place only when complete, so a directory under
`unpacked/` is always whole. Zips are untrusted input: they are checked member by member while
unpacking (paths, symlinks, bytes actually written) and a refused zip leaves nothing behind.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import threading
import uuid
from collections import Counter
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from silo.errors import RequestEntityTooLargeException
from silo.store.unzip import unpack

MAX_ZIPPED_BYTES = 52_428_800
MAX_UNZIPPED_BYTES = 262_144_000


@dataclass(frozen=True, slots=True)
class StoredCode:
    sha256_hex: str
    size: int
    directory: Path
    blob: Path

    @property
    def sha256_b64(self) -> str:
        """Lambda's `CodeSha256`: the base64 of the raw digest, not the hex."""
        return base64.b64encode(bytes.fromhex(self.sha256_hex)).decode()


def _make_writable_and_remove(path: Path) -> None:
    """Remove a tree even when it is read-only (unpacked code is 0o555 and non-root can't unlink in it)."""
    if not path.exists() and not path.is_symlink():
        return
    if path.is_dir() and not path.is_symlink():
        for dirpath, _dirnames, _files in os.walk(path):
            os.chmod(dirpath, 0o755)
        shutil.rmtree(path)
    else:
        path.unlink()


class CodeStore:
    """Stores, unpacks and garbage-collects deployment packages."""

    def __init__(
        self,
        root: Path,
        *,
        max_zipped: int = MAX_ZIPPED_BYTES,
        max_unzipped: int = MAX_UNZIPPED_BYTES,
    ) -> None:
        self.root = root
        self.max_zipped = max_zipped
        self.max_unzipped = max_unzipped
        self.blobs = root / "blobs"
        self.unpacked = root / "unpacked"
        self.scratch = root / "scratch"
        for d in (self.blobs, self.unpacked, self.scratch):
            d.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._pins: Counter[str] = Counter()

    def directory(self, sha256_hex: str) -> Path:
        return self.unpacked / sha256_hex

    def blob_path(self, sha256_hex: str) -> Path:
        return self.blobs / f"{sha256_hex}.zip"

    def read_blob(self, sha256_hex: str) -> bytes:
        return self.blob_path(sha256_hex).read_bytes()

    def has(self, sha256_hex: str) -> bool:
        return self.directory(sha256_hex).is_dir() and self.blob_path(sha256_hex).is_file()

    @contextmanager
    def add(self, zip_bytes: bytes, *, max_zipped: int | None = None) -> Iterator[StoredCode]:
        """Store a package (or find it already stored) and keep it pinned while the block runs.

        Pinned code survives `collect`, so the caller can record the reference in the database
        inside the block without racing a collection triggered by another function's update.
        `max_zipped` replaces the store's limit for this package (one from S3 may be larger than an upload).
        """
        limit = self.max_zipped if max_zipped is None else max_zipped
        if len(zip_bytes) > limit:
            raise RequestEntityTooLargeException(f"Zipped size must be smaller than {limit} bytes")
        sha = hashlib.sha256(zip_bytes).hexdigest()
        with self._lock:
            self._pins[sha] += 1
        try:
            self._materialise(sha, zip_bytes)
            yield StoredCode(sha, len(zip_bytes), self.directory(sha), self.blob_path(sha))
        finally:
            with self._lock:
                self._pins[sha] -= 1
                if self._pins[sha] == 0:
                    del self._pins[sha]

    def _materialise(self, sha: str, zip_bytes: bytes) -> None:
        created_dir = False
        final = self.directory(sha)
        if not final.is_dir():
            work = self.scratch / f"{sha}.{uuid.uuid4().hex}"
            try:
                work.mkdir()
                unpack(zip_bytes, work, self.max_unzipped)
                try:
                    # Renamed while still writable: moving a directory to a new parent rewrites its `..`.
                    os.rename(work, final)
                    created_dir = True
                except OSError:
                    if not final.is_dir():
                        raise
                    # Another upload of the same bytes won the race; theirs is identical.
            finally:
                _make_writable_and_remove(work)
            if created_dir:
                os.chmod(final, 0o555)
        blob = self.blob_path(sha)
        if blob.is_file():
            return
        tmp = self.scratch / f"{sha}.{uuid.uuid4().hex}.zip"
        try:
            tmp.write_bytes(zip_bytes)
            os.chmod(tmp, 0o444)
            os.replace(tmp, blob)
        except BaseException:
            _make_writable_and_remove(tmp)
            if created_dir:
                _make_writable_and_remove(final)
            raise

    def stored(self) -> set[str]:
        """Every sha that has a blob or an unpacked directory."""
        shas = {p.name for p in self.unpacked.iterdir()}
        shas.update(p.name.removesuffix(".zip") for p in self.blobs.iterdir())
        return shas

    def collect(self, in_use: Collection[str], candidates: Iterable[str] | None = None) -> list[str]:
        """Delete stored code that nothing uses; pinned code (being added right now) is never touched.

        `candidates` narrows the search (e.g. the sha a function just stopped using); by default every
        stored package is considered. Returns the shas removed.
        """
        considered = set(self.stored() if candidates is None else candidates)
        removed: list[str] = []
        for sha in sorted(considered):
            with self._lock:
                if sha in in_use or self._pins[sha] > 0:
                    continue
                # Held through the removal so a concurrent `add` of the same bytes waits for it.
                existed = self.directory(sha).exists() or self.blob_path(sha).exists()
                _make_writable_and_remove(self.directory(sha))
                _make_writable_and_remove(self.blob_path(sha))
            if existed:
                removed.append(sha)
        return removed

    def clear_scratch(self) -> None:
        """Remove leftovers of uploads interrupted by a crash. Call before serving, never during."""
        for entry in self.scratch.iterdir():
            _make_writable_and_remove(entry)
