"""The cgroup2 mount's options as silo reads them, and a host where `favordynmods` does not apply. That the
option is set, with the mount's other options kept, is checked on a cgroup-v2 kernel (tests/cgroup2)."""

from __future__ import annotations

from pathlib import Path

from silo.jail import cgroup_mount

MOUNTINFO = """\
24 30 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
36 24 0:31 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime master:1 - cgroup cgroup rw,memory
90 35 0:40 / /sys/fs/cgroup rw,relatime - cgroup2 none rw,nsdelegate,favordynmods
"""


def test_the_options_are_the_last_cgroup2_mount_at_the_place(tmp_path: Path) -> None:
    info = tmp_path / "mountinfo"
    info.write_text(MOUNTINFO)
    # The later mount at /sys/fs/cgroup covers the first.
    assert cgroup_mount.mount_options(Path("/sys/fs/cgroup"), str(info)) == {"rw", "nsdelegate", "favordynmods"}
    info.write_text(MOUNTINFO.splitlines(keepends=True)[1])
    assert cgroup_mount.mount_options(Path("/sys/fs/cgroup"), str(info)) == {
        "rw",
        "nsdelegate",
        "memory_recursiveprot",
    }
    # A v1 controller's mount is not a cgroup2 mount.
    assert cgroup_mount.mount_options(Path("/sys/fs/cgroup/memory"), str(info)) is None


def test_where_no_cgroup2_is_mounted_nothing_is_tried(tmp_path: Path) -> None:
    said = cgroup_mount.set_favordynmods(tmp_path)
    assert said == f"{tmp_path} is not a cgroup2 mount; favordynmods does not apply"
