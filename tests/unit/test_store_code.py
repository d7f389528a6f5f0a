from __future__ import annotations

import hashlib
import io
import os
import stat
import zipfile
from pathlib import Path

import pytest

from silo.errors import InvalidParameterValueException, RequestEntityTooLargeException
from silo.store.code import MAX_UNZIPPED_BYTES, MAX_ZIPPED_BYTES, CodeStore

CORRUPT = "Could not unzip uploaded file. Please check your file, then try to upload again."


def make_zip(*members: tuple[str, bytes] | zipfile.ZipInfo | tuple[zipfile.ZipInfo, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for m in members:
            if isinstance(m, zipfile.ZipInfo):
                zf.writestr(m, b"")
            else:
                zf.writestr(m[0], m[1])
    return buf.getvalue()


def file_info(name: str, mode: int = 0o644) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFREG | mode) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def symlink(name: str, target: str) -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, target.encode()


def leftovers(store: CodeStore) -> list[str]:
    return sorted(str(p.relative_to(store.root)) for p in store.root.rglob("*") if p.parent != store.root)


@pytest.fixture
def store(tmp_path: Path) -> CodeStore:
    return CodeStore(tmp_path / "code")


def refused(store: CodeStore, data: bytes) -> InvalidParameterValueException:
    with pytest.raises(InvalidParameterValueException) as info, store.add(data):
        pass
    assert leftovers(store) == [], "a refused zip must leave nothing behind"
    return info.value


def test_add_stores_blob_and_read_only_unpacked_tree(store: CodeStore) -> None:
    data = make_zip(("app.py", b"print(1)\n"), (file_info("bin/tool", 0o755), b"#!/bin/sh\n"))
    with store.add(data) as stored:
        pass
    assert stored.sha256_hex == hashlib.sha256(data).hexdigest()
    assert stored.size == len(data)
    assert store.read_blob(stored.sha256_hex) == data
    root = stored.directory
    assert (root / "app.py").read_bytes() == b"print(1)\n"
    assert stat.S_IMODE(os.stat(root / "app.py").st_mode) == 0o444
    assert stat.S_IMODE(os.stat(root / "bin" / "tool").st_mode) == 0o555
    assert stat.S_IMODE(os.stat(root / "bin").st_mode) == 0o555
    assert stat.S_IMODE(os.stat(root).st_mode) == 0o555
    assert stat.S_IMODE(os.stat(stored.blob).st_mode) == 0o444
    assert list(store.scratch.iterdir()) == []


def test_same_bytes_are_stored_once(store: CodeStore) -> None:
    data = make_zip(("a.py", b"x"))
    with store.add(data) as first:
        pass
    marker = os.stat(first.directory / "a.py").st_ino
    with store.add(data) as second:
        pass
    assert second.directory == first.directory
    assert os.stat(second.directory / "a.py").st_ino == marker
    assert len(list(store.unpacked.iterdir())) == 1


def test_sha256_b64_is_base64_of_the_digest(store: CodeStore) -> None:
    import base64

    data = make_zip(("a.py", b"x"))
    with store.add(data) as stored:
        pass
    assert stored.sha256_b64 == base64.b64encode(hashlib.sha256(data).digest()).decode()


def test_corrupt_zip_is_refused(store: CodeStore) -> None:
    assert refused(store, b"this is not a zip file").message == CORRUPT


def test_empty_bytes_are_refused(store: CodeStore) -> None:
    assert refused(store, b"").message == CORRUPT


def test_truncated_zip_is_refused(store: CodeStore) -> None:
    data = make_zip(("a.py", os.urandom(4000)))
    assert refused(store, data[: len(data) // 2]).message == CORRUPT


def test_bad_crc_is_refused(store: CodeStore) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("a.txt", b"hello world")
    data = bytearray(buf.getvalue())
    data[data.index(b"hello world")] = ord("j")  # content no longer matches its CRC
    assert refused(store, bytes(data)).message == CORRUPT


@pytest.mark.parametrize("name", ["../evil.py", "a/../../evil.py", "a/b/../../../evil"])
def test_member_escaping_with_dotdot_is_refused(store: CodeStore, name: str) -> None:
    err = refused(store, make_zip(("ok.py", b"x"), (name, b"owned")))
    assert err.message.startswith("Could not unzip uploaded file")
    assert name in err.message
    assert not (store.root.parent / "evil.py").exists()


def test_member_with_absolute_path_is_refused(store: CodeStore, tmp_path: Path) -> None:
    target = tmp_path / "absolute-evil.txt"
    err = refused(store, make_zip((str(target), b"owned")))
    assert "absolute path" in err.message
    assert not target.exists()


def test_symlink_with_absolute_target_is_refused(store: CodeStore) -> None:
    err = refused(store, make_zip(("a.py", b"x"), symlink("passwd", "/etc/passwd")))
    assert "points outside the package" in err.message


def test_symlink_escaping_relatively_is_refused(store: CodeStore) -> None:
    err = refused(store, make_zip(symlink("lib/up", "../../outside")))
    assert "points outside the package" in err.message


def test_symlink_chain_escaping_through_another_link_is_refused(store: CodeStore) -> None:
    # `here` -> `.` is harmless alone; `here/..` lexically looks like `.` but really is the parent.
    data = make_zip(symlink("here", "."), symlink("esc", "here/.."))
    err = refused(store, data)
    assert "points outside the package" in err.message


def test_member_below_a_symlink_is_refused(store: CodeStore, tmp_path: Path) -> None:
    # Even when the link itself stays inside, nothing may be created through it.
    data = make_zip(("real/keep.txt", b"k"), symlink("alias", "real"), symlink("alias/evil", "keep.txt"))
    err = refused(store, data)
    assert "below a symlink" in err.message


def test_file_is_never_written_through_a_symlink(store: CodeStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    data = make_zip(symlink("d", str(outside)), ("d/owned.txt", b"owned"))
    refused(store, data)
    assert list(outside.iterdir()) == []


def test_relative_symlink_inside_is_kept(store: CodeStore) -> None:
    data = make_zip(("lib/libx.so.1", b"elf"), symlink("lib/libx.so", "libx.so.1"), symlink("top", "lib"))
    with store.add(data) as stored:
        pass
    assert os.readlink(stored.directory / "lib" / "libx.so") == "libx.so.1"
    assert (stored.directory / "top" / "libx.so").read_bytes() == b"elf"


def test_name_used_as_file_and_directory_is_refused(store: CodeStore) -> None:
    assert refused(store, make_zip(("a", b"file"), ("a/b", b"below a file"))).message == CORRUPT


def test_corrupt_bzip2_stream_is_refused(store: CodeStore) -> None:
    # Found by tests/fuzz/test_fuzz_unzip.py: bz2 raises OSError for a broken stream, which went up as a 500.
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_BZIP2) as zf:
        zf.writestr("a.txt", b"hello world" * 100)
    data = bytearray(buf.getvalue())
    data[data.index(b"BZh") + 5] ^= 0xFF  # inside the block header of the bzip2 stream
    assert refused(store, bytes(data)).message == CORRUPT


def test_encrypted_member_is_refused(store: CodeStore) -> None:
    data = bytearray(make_zip(("a.txt", b"secret")))
    # Set the "encrypted" flag bit in both the local and the central header.
    for sig, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = data.index(sig) + offset
        data[at] |= 0x1
    assert refused(store, bytes(data)).message == CORRUPT


def test_zipped_size_limit(store: CodeStore) -> None:
    with pytest.raises(RequestEntityTooLargeException) as info, store.add(b"\0" * (MAX_ZIPPED_BYTES + 1)):
        pass
    assert info.value.message == "Zipped size must be smaller than 52428800 bytes"
    assert leftovers(store) == []


def test_zip_bomb_is_stopped_at_the_unzipped_limit(store: CodeStore) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf, zf.open("bomb.bin", "w") as member:
        chunk = b"\0" * (1 << 20)
        for _ in range(MAX_UNZIPPED_BYTES // len(chunk) + 2):
            member.write(chunk)
    data = buf.getvalue()
    assert len(data) < 1_000_000  # cheap to ship, huge to unpack
    err = refused(store, data)
    assert err.message == "Unzipped size must be smaller than 262144000 bytes"


def test_unzipped_limit_counts_bytes_written_across_members(tmp_path: Path) -> None:
    store = CodeStore(tmp_path / "code", max_unzipped=10_000)
    data = make_zip(*[(f"f{i}.txt", b"y" * 3000) for i in range(4)])
    with pytest.raises(InvalidParameterValueException) as info, store.add(data):
        pass
    assert info.value.message == "Unzipped size must be smaller than 10000 bytes"
    assert leftovers(store) == []


def test_size_lie_in_header_is_refused(tmp_path: Path) -> None:
    store = CodeStore(tmp_path / "code", max_unzipped=10_000)
    data = bytearray(make_zip(("big.txt", b"z" * 50_000)))
    # Claim an uncompressed size of 10 bytes in the central directory; the stream still inflates to 50 KB.
    at = data.index(b"PK\x01\x02") + 24
    data[at : at + 4] = (10).to_bytes(4, "little")
    with pytest.raises(InvalidParameterValueException), store.add(bytes(data)):
        pass
    assert leftovers(store) == []


def test_collect_removes_only_unused_and_unpinned(store: CodeStore) -> None:
    a = make_zip(("a.py", b"a"))
    b = make_zip(("b.py", b"b"))
    with store.add(a) as sa:
        pass
    with store.add(b) as sb:
        assert store.collect(in_use=set()) == [sa.sha256_hex]  # b is pinned while being added
    assert store.has(sb.sha256_hex)
    assert store.collect(in_use={sb.sha256_hex}) == []
    assert store.collect(in_use=set(), candidates=[sb.sha256_hex]) == [sb.sha256_hex]
    assert leftovers(store) == []


def test_clear_scratch_removes_interrupted_uploads(store: CodeStore) -> None:
    junk = store.scratch / "deadbeef.123"
    (junk / "sub").mkdir(parents=True)
    (junk / "sub" / "f").write_bytes(b"x")
    os.chmod(junk / "sub", 0o555)
    store.clear_scratch()
    assert list(store.scratch.iterdir()) == []


def test_missing_blob_is_rewritten_when_the_same_code_comes_again(store: CodeStore) -> None:
    data = make_zip(("a.py", b"a"))
    with store.add(data) as stored:
        pass
    os.chmod(stored.blob, 0o644)
    stored.blob.unlink()
    with store.add(data):
        pass
    assert store.read_blob(stored.sha256_hex) == data
