"""Deployment packages built to cost the daemon, not to run: members without end, paths too long or too
deep, symlink chains. Each is refused from the central directory (or the links' resolution) with
Lambda's InvalidParameterValueException, quickly, leaving nothing on disk; through the store, and
through CreateFunction and UpdateFunctionCode on the real server."""

from __future__ import annotations

import io
import stat
import struct
import time
import zipfile
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from silo.errors import InvalidParameterValueException
from silo.store import unzip
from silo.store.code import CodeStore
from tests.support import SiloServer, create_python_function, make_client

# A liveness bound, not a measurement: the old code took most of a minute on the 400,000-member zip.
QUICK_S = 10.0
TOO_MANY = f"the package holds more than {unzip.MAX_MEMBERS} files and directories"


def stored_zip(members: Iterable[tuple[bytes, bytes, int]], *, declared_entries: int | None = None) -> bytes:
    """A zip of STORED members (name, data, unix mode), packed by hand: zipfile takes seconds to write
    hundreds of thousands of members. `declared_entries` makes the end record lie about their number."""
    local: list[bytes] = []
    central: list[bytes] = []
    offset = 0
    count = 0
    for name, data, mode in members:
        crc = zlib.crc32(data)
        head = struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 0, 0, 0x21, crc, len(data), len(data), len(name), 0)
        local.append(head + name + data)
        central.append(
            struct.pack(
                "<4s6H3L5HLL",
                b"PK\x01\x02",
                0x0314,  # made by unix, so the mode in external_attr counts
                20,
                0,
                0,
                0,
                0x21,
                crc,
                len(data),
                len(data),
                len(name),
                0,
                0,
                0,
                0,
                mode << 16,
                offset,
            )
            + name
        )
        offset += len(head) + len(name) + len(data)
        count += 1
    directory = b"".join(central)
    entries = min(count if declared_entries is None else declared_entries, 0xFFFF)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, entries, entries, len(directory), offset, 0)
    return b"".join(local) + directory + end


def empty_files(n: int, prefix: str = "") -> Iterable[tuple[bytes, bytes, int]]:
    return ((f"{prefix}{i:x}".encode(), b"", stat.S_IFREG | 0o644) for i in range(n))


def file(name: str, data: bytes = b"x") -> tuple[bytes, bytes, int]:
    return name.encode(), data, stat.S_IFREG | 0o644


def link(name: str, target: str) -> tuple[bytes, bytes, int]:
    return name.encode(), target.encode(), stat.S_IFLNK | 0o777


def everything_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture
def store(tmp_path: Path) -> CodeStore:
    return CodeStore(tmp_path / "code")


def refused(store: CodeStore, data: bytes) -> str:
    """The message the store refuses `data` with, once it has checked nothing was left and it was quick."""
    before = set(everything_under(store.root))
    started = time.monotonic()
    with pytest.raises(InvalidParameterValueException) as info, store.add(data):
        pass
    elapsed = time.monotonic() - started
    assert set(everything_under(store.root)) == before, "a refused package must leave nothing behind"
    assert elapsed < QUICK_S, f"refusing took {elapsed:.1f} s"
    return info.value.message


def test_the_hand_packed_zip_is_a_zip(store: CodeStore) -> None:
    data = stored_zip([file("a.py", b"print(1)\n"), file("d/b.txt", b"b"), link("d/c", "b.txt")])
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.testzip() is None
    with store.add(data) as stored:
        assert (stored.directory / "d" / "c").read_bytes() == b"b"


def test_400000_empty_files_are_refused_before_anything_is_written(store: CodeStore) -> None:
    data = stored_zip(empty_files(400_000))
    assert 30_000_000 < len(data) < store.max_zipped  # the 38 MB, under the 50 MB upload limit
    assert TOO_MANY in refused(store, data)


def test_one_member_past_the_bound_is_refused(store: CodeStore) -> None:
    assert TOO_MANY in refused(store, stored_zip(empty_files(unzip.MAX_MEMBERS + 1)))


def test_an_end_record_that_understates_the_members_is_not_believed(store: CodeStore) -> None:
    # zipfile reads every entry the directory's size covers, whatever the end record's count says.
    data = stored_zip(empty_files(unzip.MAX_MEMBERS + 10_000), declared_entries=3)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert len(zf.infolist()) == unzip.MAX_MEMBERS + 10_000
    assert TOO_MANY in refused(store, data)


def test_a_large_but_real_package_still_unpacks(store: CodeStore) -> None:
    # 10,000 members in 200 directories, paths of about 100 bytes: a big unbundled package of today.
    deep = "site-packages/vendor/library/submodule"
    data = stored_zip(file(f"{deep}/pkg{i % 200}/{'m' * 40}{i}.py", b"x = 1\n") for i in range(10_000))
    with store.add(data) as stored:
        assert len(list(stored.directory.glob(f"{deep}/pkg*/*.py"))) == 10_000


def test_a_component_longer_than_the_kernel_takes_is_refused(store: CodeStore) -> None:
    # Before: os.open failed with ENAMETOOLONG, an OSError, which the API answered as a 500.
    message = refused(store, stored_zip([file("ok.py"), file("a" * 256)]))
    assert f"name longer than {unzip.MAX_NAME_BYTES} bytes" in message
    assert len(message) < 400, "the name is shortened in the message"


def test_a_path_longer_than_the_bound_is_refused(store: CodeStore) -> None:
    name = "/".join(["d" * 200] * 6)  # every component fine, 1,205 bytes in all
    assert f"path longer than {unzip.MAX_PATH_BYTES} bytes" in refused(store, stored_zip([file(name)]))


def test_a_path_deeper_than_the_bound_is_refused(store: CodeStore) -> None:
    name = "/".join(["d"] * (unzip.MAX_PATH_DEPTH + 1))
    assert f"more than {unzip.MAX_PATH_DEPTH} directories deep" in refused(store, stored_zip([file(name)]))


def test_paths_adding_up_past_the_bound_are_refused(store: CodeStore) -> None:
    prefix = "/".join(c * 250 for c in "pqr") + "/" + "s" * 240  # each component fine, 993 bytes
    n = unzip.MAX_TOTAL_PATH_BYTES // len(prefix) + 1
    data = stored_zip(empty_files(n, prefix=prefix))
    assert n < unzip.MAX_MEMBERS and len(data) < store.max_zipped
    assert "paths of the package's members add up to more than" in refused(store, data)


def test_a_long_symlink_chain_is_refused_quickly(store: CodeStore) -> None:
    # Before: realpath followed the rest of the chain for every link of it, recursing once per link:
    # RecursionError (a 500) at about a thousand links, quadratic time below.
    chain = [file("l0")] + [link(f"l{i}", f"l{i - 1}") for i in range(1, 3000)]
    assert f"does not resolve within {unzip.MAX_LINK_HOPS} links" in refused(store, stored_zip(chain))


def test_a_symlink_loop_is_refused(store: CodeStore) -> None:
    assert "a chain or a loop" in refused(store, stored_zip([link("a", "b"), link("b", "a")]))


def test_a_chain_the_kernel_follows_is_kept(store: CodeStore) -> None:
    chain = [file("l0", b"end")] + [link(f"l{i}", f"l{i - 1}") for i in range(1, 31)]
    with store.add(stored_zip(chain)) as stored:
        assert (stored.directory / "l30").read_bytes() == b"end"


def test_dangling_chains_through_a_missing_directory_are_checked_quickly(store: CodeStore) -> None:
    # `missing/..` ends the kernel's walk; realpath went on lexically and followed the chain again.
    chain = [file("l0")] + [link(f"l{i}", f"missing/../l{i - 1}") for i in range(1, 3000)]
    started = time.monotonic()
    with store.add(stored_zip(chain)) as stored:
        pass
    assert time.monotonic() - started < QUICK_S
    assert (stored.directory / "l5").is_symlink()


def test_a_symlink_target_of_path_max_bytes_is_refused(store: CodeStore) -> None:
    # Before: 4,096 bytes passed the target bound and symlink(2) failed with ENAMETOOLONG (a 500).
    assert "oversized target" in refused(store, stored_zip([link("l", "a/" * 2048)]))


def test_a_link_leaving_the_tree_on_the_way_back_in_is_refused(tmp_path: Path) -> None:
    # `d/up` is the root; `d/up/../pkg/d/f` steps above it and comes back in by the root's own name, so
    # it ends inside here but would lead elsewhere once the tree is renamed or mounted. realpath only
    # looked at where it ended; the kernel's walk refuses the step above the root.
    root = tmp_path / "pkg"
    root.mkdir()
    data = stored_zip([file("d/f"), link("d/up", ".."), link("back", "d/up/../pkg/d/f")])
    with pytest.raises(InvalidParameterValueException) as info:
        unzip.unpack(data, root, 1 << 20)
    assert "symlink 'back' points outside the package" in info.value.message


# Through the real server: the same packages, sent by boto3.


def code_dir_entries(server: SiloServer) -> list[str]:
    code = Path(server.data_dir) / "code"
    return sorted(str(p.relative_to(code)) for p in code.rglob("*") if p.parent.name in ("scratch", "unpacked"))


def error_of(call: Any) -> dict[str, Any]:
    with pytest.raises(ClientError) as info:
        call()
    response: dict[str, Any] = info.value.response
    return response


def test_create_function_refuses_a_zip_of_many_empty_files(silo_server: SiloServer, unique_name: str) -> None:
    client = make_client(silo_server.endpoint)
    data = stored_zip(empty_files(unzip.MAX_MEMBERS + 20_000))
    before = code_dir_entries(silo_server)
    started = time.monotonic()
    err = error_of(
        lambda: client.create_function(
            FunctionName=unique_name,
            Runtime="provided.al2023",
            Role="arn:aws:iam::123456789012:role/r",
            Handler="bootstrap",
            Code={"ZipFile": data},
        )
    )
    assert time.monotonic() - started < QUICK_S
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert err["Error"]["Code"] == "InvalidParameterValueException"
    assert TOO_MANY in err["Error"]["Message"]
    assert code_dir_entries(silo_server) == before, "nothing unpacked, nothing left in scratch"
    assert error_of(lambda: client.get_function(FunctionName=unique_name))["Error"]["Code"] == (
        "ResourceNotFoundException"
    )


def test_update_function_code_refuses_a_symlink_chain_and_keeps_the_code(
    silo_server: SiloServer, unique_name: str
) -> None:
    client = make_client(silo_server.endpoint)
    created = create_python_function(client, unique_name, "def handler(event, context):\n    return 'still here'\n")
    chain = [file("app.py", b"")] + [link(f"l{i}", f"l{i - 1}" if i > 1 else "app.py") for i in range(1, 2000)]
    err = error_of(lambda: client.update_function_code(FunctionName=unique_name, ZipFile=stored_zip(chain)))
    assert err["Error"]["Code"] == "InvalidParameterValueException"
    assert "does not resolve within 40 links" in err["Error"]["Message"]
    assert client.get_function_configuration(FunctionName=unique_name)["CodeSha256"] == created["CodeSha256"]
    assert client.invoke(FunctionName=unique_name)["Payload"].read() == b'"still here"'
