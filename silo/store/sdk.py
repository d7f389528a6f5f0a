"""The AWS SDK for Python the Python runtimes ship, as Lambda's do: boto3, botocore and what they import.

A function that imports boto3 without bundling it works on Lambda, because the runtime has a copy of
its own (on `python3.12` and later in /var/lang/lib/python3.x/site-packages, after the function's code,
the layers and the standard library on sys.path). silo ships the boto3 and botocore it runs with
itself: the distributions named in PACKAGES, found through importlib.metadata in the server's own
install, copied once into one directory of the data directory:

    <root>/<digest>/<runtime>/   the SDK's packages, their .dist-info and that runtime's bytecode;
                                 environments of the runtime mount it read-only
    <root>/<digest>/.scratch/    work in progress; anything here after a crash is garbage

The digest is that of the distributions' names and versions, so a server whose boto3 changed (an
upgrade of silo's install) builds a new tree at its next start and removes the old one. Only the files
each distribution's RECORD lists under site-packages are taken (no script, nothing of silo or of any
other package of its install), hard-linked when the data directory shares the install's filesystem and
copied otherwise. Each runtime's tree holds the bytecode of that runtime's interpreter, named as its
environments see the files, since environments run with -B and would otherwise compile botocore at
every cold start; it is built at the first start of an environment of that runtime. See
docs/security.md, "The runtime's SDK".
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import shutil
import subprocess
import threading
import uuid
from pathlib import Path

from silo.runtimes.catalog import sdk_path

log = logging.getLogger(__name__)

# boto3 and everything it imports, as the distributions that hold them are named.
PACKAGES = ("boto3", "botocore", "s3transfer", "jmespath", "python-dateutil", "six", "urllib3")
COMPILE_TIMEOUT_S = 300


class SdkError(Exception):
    """The SDK's tree could not be built from the server's install."""


def installed_versions() -> dict[str, str]:
    """The version of each distribution of PACKAGES in the server's install."""
    versions: dict[str, str] = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            raise SdkError(
                f"{name} is not installed with silo, so the Python runtimes cannot ship boto3; "
                "reinstall silo with its dependencies (make install)"
            ) from None
    return versions


def digest_of(versions: dict[str, str]) -> str:
    return hashlib.sha256("\n".join(f"{n}=={v}" for n, v in sorted(versions.items())).encode()).hexdigest()


def _files(name: str) -> list[tuple[Path, Path]]:
    """(installed file, path relative to site-packages) of distribution `name`, bytecode and scripts left out."""
    dist = importlib.metadata.distribution(name)
    if dist.files is None:
        raise SdkError(f"{name} was installed without a RECORD of its files; reinstall silo (make install)")
    out = []
    for entry in dist.files:
        relative = Path(entry)
        if relative.is_absolute() or ".." in relative.parts or "__pycache__" in relative.parts:
            continue
        source = Path(str(dist.locate_file(entry)))
        if source.is_file() and not source.is_symlink():
            out.append((source, relative))
    return out


def _place(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target, follow_symlinks=False)
    except OSError:
        # Another filesystem, or a kernel that refuses the link: copy instead.
        shutil.copy2(source, target, follow_symlinks=False)


def _compile(tree: Path, runtime: str, exe: Path) -> None:
    """The tree's bytecode for `runtime`, its file names as environments of that runtime see them."""
    command = [str(exe), "-S", "-m", "compileall", "-q", "-j", "0", "-d", sdk_path(runtime), str(tree)]
    try:
        done = subprocess.run(command, capture_output=True, timeout=COMPILE_TIMEOUT_S, check=False)
        failed, out = done.returncode != 0, done.stdout + done.stderr
    except subprocess.TimeoutExpired:
        failed, out = True, b"compileall did not finish"
    if failed:
        # An interpreter older than the SDK supports (botocore needs 3.9) fails on syntax it does not know;
        # its environments import what they can without bytecode, as they would anyway.
        log.warning(
            "the SDK's bytecode could not be compiled for %s, whose environments import boto3 more slowly: %s",
            runtime,
            out.decode(errors="replace").strip()[-500:],
        )


def _seal(tree: Path) -> None:
    # Directories only: the files may be hard links to the install's own, whose modes are not ours to change.
    for dirpath, _dirs, _files in os.walk(tree):
        os.chmod(dirpath, 0o555)


def _remove(path: Path) -> None:
    for dirpath, _dirs, _files in os.walk(path):
        os.chmod(dirpath, 0o755)
    shutil.rmtree(path, ignore_errors=True)


class RuntimeSdk:
    """The SDK's trees of the server's installed versions, one per Python runtime, each built at the first
    start of an environment of that runtime (a tree with every runtime's bytecode would cost every server
    start seconds) and then read-only. Thread-safe: environments start in worker threads."""

    def __init__(self, root: Path, interpreters: dict[str, Path]) -> None:
        """`interpreters`: runtime -> the host executable that compiles the bytecode of that runtime's tree.
        Raises SdkError at once, at the server's start, if the install lacks a package."""
        self.versions = installed_versions()
        self.root = root / digest_of(self.versions)
        self._interpreters = interpreters
        self._lock = threading.Lock()
        root.mkdir(parents=True, exist_ok=True)
        # Trees of other versions and the scratch of a build that crashed: nothing runs from them any more.
        for entry in root.iterdir():
            if entry != self.root and entry.is_dir() and not entry.is_symlink():
                _remove(entry)
        if (self.root / ".scratch").is_dir():
            _remove(self.root / ".scratch")

    def directory(self, runtime: str) -> Path:
        """The tree environments of `runtime` see, built unless it already is."""
        target = self.root / runtime
        if target.is_dir():
            return target
        with self._lock:
            if not target.is_dir():
                self._build(runtime, target)
        return target

    def _build(self, runtime: str, target: Path) -> None:
        scratch_root = self.root / ".scratch"
        scratch_root.mkdir(parents=True, exist_ok=True)
        scratch = scratch_root / uuid.uuid4().hex
        try:
            for name in PACKAGES:
                for source, relative in _files(name):
                    _place(source, scratch / relative)
            exe = self._interpreters.get(runtime)
            if exe is not None:
                _compile(scratch, runtime, exe)
            _seal(scratch)
            try:
                os.rename(scratch, target)
            except OSError:
                if not target.is_dir():
                    raise
                # Another server on this data directory (one stopping while its successor starts) built
                # the same tree first: the same files, so its tree serves.
                _remove(scratch)
                return
        except BaseException:
            _remove(scratch)
            raise
        log.info("%s ships %s", runtime, ", ".join(f"{n} {v}" for n, v in self.versions.items()))
