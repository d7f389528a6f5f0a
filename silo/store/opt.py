"""What a function with layers sees at /opt: its layers merged in order, built once and then read-only.

Lambda extracts a function's layers into /opt one after the other, so a later layer's file replaces an
earlier one's of the same path and directories merge. silo does that merge once per ordered list of layer
versions, here, into a directory named by the digest of the list's code digests:

    <root>/<digest>/     the merged tree; environments mount it read-only at /opt
    <root>/.scratch/     work in progress; anything here after a crash is garbage

The layers' trees were unpacked and checked by silo.store.unzip (no path outside the tree, every symlink
resolving inside it). The merge reads them without following any symlink and writes only into
directories it made itself, so it cannot be led outside its own tree either. Files are hard links to the
layers' own (read-only, owned by the daemon), so a merge copies no data; a later layer's entry replaces
an earlier one's whatever their kinds (a file over a directory, a directory over a symlink), as the last
extraction would leave it. Environments see one read-only directory (see docs/security.md, "Layers").
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
import uuid
from collections.abc import Collection, Sequence
from pathlib import Path


def digest_of(code_shas: Sequence[str]) -> str:
    """The name of the merged tree of these layers' code, in this order."""
    return hashlib.sha256("\n".join(code_shas).encode()).hexdigest()


def _writable_remove(path: Path) -> None:
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
        return
    for dirpath, _dirs, _files in os.walk(path):
        os.chmod(dirpath, 0o755)
    shutil.rmtree(path)


def _merge_into(source: Path, target: Path) -> None:
    """Lay the tree `source` over the directory `target` (made by this module, writable)."""
    with os.scandir(source) as entries:
        for entry in entries:
            placed = target / entry.name
            if entry.is_dir(follow_symlinks=False):
                if placed.is_symlink() or (placed.exists() and not placed.is_dir()):
                    _writable_remove(placed)
                if not placed.exists():
                    placed.mkdir(mode=0o755)
                _merge_into(Path(entry.path), placed)
                continue
            if placed.is_symlink() or placed.exists():
                _writable_remove(placed)
            if entry.is_symlink():
                os.symlink(os.readlink(entry.path), placed)
            else:
                try:
                    os.link(entry.path, placed, follow_symlinks=False)
                except OSError:
                    # Another filesystem, or a kernel that refuses the link: copy instead.
                    shutil.copy2(entry.path, placed, follow_symlinks=False)


def _seal(root: Path) -> None:
    for dirpath, _dirs, _files in os.walk(root):
        os.chmod(dirpath, 0o555)


class OptStore:
    """Builds, finds and garbage-collects merged layer trees."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.scratch = root / ".scratch"
        self.scratch.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def directory(self, digest: str) -> Path:
        return self.root / digest

    def build(self, code_shas: Sequence[str], trees: Sequence[Path]) -> Path:
        """The merged tree of `trees` (the unpacked layers whose code is `code_shas`), made if missing."""
        digest = digest_of(code_shas)
        final = self.directory(digest)
        with self._lock:
            if final.is_dir():
                return final
            work = self.scratch / f"{digest}.{uuid.uuid4().hex}"
            try:
                work.mkdir()
                for tree in trees:
                    _merge_into(tree, work)
                # Renamed while still writable: moving a directory to a new parent rewrites its `..`.
                os.rename(work, final)
            finally:
                if work.exists():
                    _writable_remove(work)
            _seal(final)
        return final

    def collect(self, in_use: Collection[str]) -> list[str]:
        """Remove every merged tree whose digest is not in `in_use`; returns the digests removed."""
        removed = []
        with self._lock:
            for entry in self.root.iterdir():
                if entry.name.startswith(".") or entry.name in in_use:
                    continue
                _writable_remove(entry)
                removed.append(entry.name)
        return removed

    def clear_scratch(self) -> None:
        """Remove merges interrupted by a crash. Call before serving, never during."""
        for entry in self.scratch.iterdir():
            _writable_remove(entry)
