"""Fuzz the zip unpacker: generated archives (members of every kind, names with `..`, absolute paths,
symlinks and chains of them, duplicate names, huge declared sizes, corrupted bytes of a valid zip).

Whatever the archive, `unpack` either writes a tree inside its directory, of read-only files and
directories and links that resolve inside it, holding no more than the limit, or raises
InvalidParameterValueException; never another exception, never a byte outside the directory."""

from __future__ import annotations

import io
import os
import shutil
import stat
import struct
import tempfile
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from silo.errors import InvalidParameterValueException
from silo.store import unzip
from tests.fuzz.bounded import fuzz_settings

# Stands for the absolute path of a directory beside the package, filled in when the zip is built.
OUTSIDE = "\0outside"

COMPONENTS = st.one_of(
    st.sampled_from(["a", "b", "lib", "..", ".", "", "é", "a\\b", " ", "x" * 255, "y" * 256, "~", OUTSIDE]),
    st.text(alphabet="ab.-_/\\ é\u202e", min_size=1, max_size=6),
)
NAMES = st.builds(
    lambda lead, parts, trail: lead + "/".join(parts) + trail,
    st.sampled_from(["", "", "", "/", "./", "../"]),
    st.lists(COMPONENTS, min_size=1, max_size=4),
    st.sampled_from(["", "", "/"]),
)
KINDS = st.sampled_from(["file", "file", "dir", "link", "link", "fifo"])
COMPRESSION = st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])


@dataclass(frozen=True)
class Member:
    name: str
    kind: str
    data: bytes
    mode: int
    compression: int


MEMBERS = st.builds(
    Member,
    name=NAMES,
    kind=KINDS,
    data=st.one_of(st.binary(max_size=64), NAMES.map(str.encode), st.just(b"\0" * 5000)),
    mode=st.integers(0, 0o7777),
    compression=COMPRESSION,
)


def concrete(text: str, outside: Path) -> str:
    return text.replace(OUTSIDE, str(outside))


def build(members: list[Member], outside: Path) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names are the point, not a mistake
        with zipfile.ZipFile(buf, "w") as zf:
            for m in members:
                kind_bits = {"file": stat.S_IFREG, "dir": stat.S_IFDIR, "link": stat.S_IFLNK, "fifo": stat.S_IFIFO}
                info = zipfile.ZipInfo(concrete(m.name, outside) or "empty")
                info.create_system = 3
                info.external_attr = (kind_bits[m.kind] | m.mode) << 16
                info.compress_type = m.compression
                zf.writestr(info, concrete(m.data.decode("latin-1"), outside).encode("latin-1"))
    return buf.getvalue()


# What can be done to the bytes of a valid zip: flip bytes, cut it short, or lie in a header.
MUTATIONS = st.one_of(
    st.just(("none", 0, 0)),
    st.tuples(st.just("flip"), st.integers(0, 1 << 16), st.integers(1, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 1 << 16), st.just(0)),
    st.tuples(st.just("declare"), st.integers(0, 20), st.sampled_from([0, 1, 0xFFFFFFFF, 0x7FFFFFFF, 10**9])),
)


def mutate(data: bytes, mutation: tuple[str, int, int]) -> bytes:
    kind, at, value = mutation
    out = bytearray(data)
    if kind == "flip" and out:
        out[at % len(out)] ^= value
    elif kind == "truncate":
        del out[at % (len(out) + 1) :]
    elif kind == "declare":
        # The uncompressed size of one central directory entry (offset 24) and of its local header (22).
        entries = [i for i in range(len(out)) if out[i : i + 4] == b"PK\x01\x02"]
        if entries:
            entry = entries[at % len(entries)]
            out[entry + 24 : entry + 28] = struct.pack("<L", value)
            local = struct.unpack("<L", out[entry + 42 : entry + 46])[0]
            if out[local : local + 4] == b"PK\x03\x04":
                out[local + 22 : local + 26] = struct.pack("<L", value)
    return bytes(out)


def tree(root: Path) -> dict[str, os.stat_result]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            out[str(path.relative_to(root))] = os.lstat(path)
    return out


def check_tree(root: Path, written: int, limit: int) -> None:
    entries = tree(root)
    counted = 0
    real_root = os.path.realpath(root)
    for rel, st_ in entries.items():
        path = root / rel
        mode = stat.S_IMODE(st_.st_mode)
        if stat.S_ISREG(st_.st_mode):
            assert mode in (0o444, 0o555), (rel, oct(mode))
            counted += st_.st_size
        elif stat.S_ISDIR(st_.st_mode):
            assert mode == 0o555, (rel, oct(mode))
        elif stat.S_ISLNK(st_.st_mode):
            target = os.readlink(path)
            assert not target.startswith("/"), (rel, target)
            resolved = os.path.realpath(path)
            assert os.path.commonpath([real_root, resolved]) == real_root, (rel, target, resolved)
            counted += len(os.fsencode(target))
        else:
            raise AssertionError(f"{rel} is neither a file, a directory nor a symlink: {oct(st_.st_mode)}")
    # Duplicate names overwrite: the budget counts every byte written, the tree keeps the last ones.
    assert counted <= written <= limit


def check_unpack(members: list[Member], mutation: tuple[str, int, int], limit: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        outside = base / "outside"
        outside.mkdir()
        (base / "sentinel").write_bytes(b"untouched")
        root = base / "root"
        root.mkdir()
        data = mutate(build(members, outside), mutation)
        try:
            written = unzip.unpack(data, root, limit)
        except InvalidParameterValueException as exc:
            assert exc.message.startswith(("Could not unzip uploaded file", "Unzipped size must be smaller"))
            written = None
        assert sorted(os.listdir(base)) == ["outside", "root", "sentinel"]
        assert os.listdir(outside) == [] and (base / "sentinel").read_bytes() == b"untouched"
        if written is not None:
            check_tree(root, written, limit)
        for dirpath, _, _ in os.walk(root):
            os.chmod(dirpath, 0o755)
        shutil.rmtree(root)


@fuzz_settings(400, slow=True)
@given(members=st.lists(MEMBERS, max_size=8), mutation=MUTATIONS, limit=st.sampled_from([1 << 20, 6000, 10, 0]))
def test_unpack_stays_inside_or_refuses(members: list[Member], mutation: tuple[str, int, int], limit: int) -> None:
    check_unpack(members, mutation, limit)


# Few names, so that links name each other: chains, loops, `..` through a link, links below links.
GRAPH_NAMES = st.sampled_from(["a", "b", "c", "d/a", "d/b", "d", "a/b", "a/..", "..", ".", "d/../b", "a/./c"])
GRAPH_TARGETS = st.one_of(
    GRAPH_NAMES,
    st.lists(GRAPH_NAMES, min_size=1, max_size=4).map("/".join),
    st.sampled_from(["missing/../a", "d/../../x", OUTSIDE, "../outside", ".", ""]),
)


@fuzz_settings(300, slow=True)
@given(
    links=st.lists(st.tuples(GRAPH_NAMES, GRAPH_TARGETS), min_size=1, max_size=10),
    files=st.lists(GRAPH_NAMES, max_size=3),
    dirs=st.lists(GRAPH_NAMES, max_size=2),
)
def test_symlink_graphs_resolve_inside_or_are_refused(
    links: list[tuple[str, str]], files: list[str], dirs: list[str]
) -> None:
    members = [Member(f, "file", b"f", 0o644, zipfile.ZIP_STORED) for f in files]
    members += [Member(d + "/", "dir", b"", 0o755, zipfile.ZIP_STORED) for d in dirs]
    members += [Member(name, "link", target.encode(), 0o777, zipfile.ZIP_STORED) for name, target in links]
    check_unpack(members, ("none", 0, 0), 1 << 20)
