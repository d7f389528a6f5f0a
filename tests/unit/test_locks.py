"""The lock files `make` installs from (requirements/server.txt, requirements/test.txt) against pyproject.toml:
every dependency pyproject names is pinned there, with hashes, at a version its range allows, and the two
files agree on what they share. A dependency changed in pyproject.toml without `make lock` fails here."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
SERVER = ROOT / "requirements" / "server.txt"
TESTING = ROOT / "requirements" / "test.txt"
HINT = "run `make lock` after changing pyproject.toml's dependencies"


class Pin:
    def __init__(self, requirement: Requirement, hashes: list[str]) -> None:
        self.requirement = requirement
        self.hashes = hashes

    @property
    def version(self) -> Version:
        (specifier,) = self.requirement.specifier
        return Version(specifier.version)


def entries(text: str) -> list[str]:
    """A requirements file's entries, each with its continuation lines joined and comments left out."""
    out: list[str] = []
    current = ""
    for line in text.splitlines():
        line = line.split(" #", 1)[0] if not line.lstrip().startswith("#") else ""
        line = line.strip()
        if not line:
            continue
        continued = line.endswith("\\")
        current += " " + line.removesuffix("\\").strip()
        if not continued:
            out.append(current.strip())
            current = ""
    if current.strip():
        out.append(current.strip())
    return out


def pins(path: Path) -> dict[str, Pin]:
    out: dict[str, Pin] = {}
    for entry in entries(path.read_text()):
        words = entry.split(" --hash=")
        requirement = Requirement(words[0])
        name = canonicalize_name(requirement.name)
        specifiers = list(requirement.specifier)
        assert len(specifiers) == 1 and specifiers[0].operator == "==", f"{path.name}: {entry!r} is not a pin"
        assert name not in out, f"{path.name} pins {name} twice"
        out[name] = Pin(requirement, words[1:])
    return out


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def direct(*, extra: str | None) -> list[Requirement]:
    project = pyproject()["project"]
    listed = project["dependencies"] if extra is None else project["optional-dependencies"][extra]
    return [Requirement(text) for text in listed]


@pytest.mark.parametrize("path", [SERVER, TESTING], ids=lambda p: p.name)
def test_every_package_is_pinned_with_its_hashes(path: Path) -> None:
    for name, pin in pins(path).items():
        assert pin.hashes, f"{path.name}: {name} has no --hash, and pip --require-hashes refuses it ({HINT})"
        assert all(h.startswith("sha256:") and len(h) == len("sha256:") + 64 for h in pin.hashes), name


@pytest.mark.parametrize(
    ("path", "wanted"),
    [
        (SERVER, direct(extra=None)),
        (TESTING, direct(extra=None) + direct(extra="test")),
        # silo is installed with --no-build-isolation: its build backend comes from the server's pins.
        (SERVER, [Requirement(text) for text in pyproject()["build-system"]["requires"]]),
    ],
    ids=["server", "test", "build-system"],
)
def test_every_dependency_of_pyproject_is_pinned_within_its_range(path: Path, wanted: list[Requirement]) -> None:
    pinned = pins(path)
    for requirement in wanted:
        pin = pinned.get(canonicalize_name(requirement.name))
        assert pin is not None, f"{requirement.name} is in pyproject.toml but not pinned in {path.name} ({HINT})"
        assert requirement.specifier.contains(pin.version, prereleases=True), (
            f"{path.name} pins {requirement.name} {pin.version}, outside pyproject.toml's {requirement} ({HINT})"
        )


def test_the_test_lock_keeps_every_server_pin() -> None:
    # `make test` installs the test lock over the server's packages and `make run` does not reinstall after
    # it: that holds only if the two files pin the same version of everything they share.
    server, testing = pins(SERVER), pins(TESTING)
    for name, pin in server.items():
        assert name in testing, f"{name} is pinned in server.txt but not in test.txt ({HINT})"
        assert testing[name].version == pin.version, (
            f"server.txt pins {name} {pin.version}, test.txt {testing[name].version} ({HINT})"
        )
        assert set(testing[name].hashes) == set(pin.hashes), f"{name}'s hashes differ between the two files"


# Libraries whose private parts silo uses (pyproject.toml says which and why): a release past the tested
# one must be a decision taken with `make lock` and the tests, never what a fresh install happens to get.
RELIES_ON_INTERNALS = ("uvicorn", "httptools")


@pytest.mark.parametrize("name", RELIES_ON_INTERNALS)
def test_libraries_silo_reaches_into_have_an_upper_bound(name: str) -> None:
    (requirement,) = (r for r in direct(extra=None) if canonicalize_name(r.name) == name)
    assert any(s.operator == "<" for s in requirement.specifier), f"pyproject.toml: {requirement} has no upper bound"


def test_the_reader_takes_pins_hashes_and_markers_and_leaves_comments(tmp_path: Path) -> None:
    lock = tmp_path / "server.txt"
    lock.write_text(
        "# made by hand\n"
        "uvicorn==0.54.0 \\\n"
        "    --hash=sha256:" + "0" * 64 + " \\\n"
        "    --hash=sha256:" + "2" * 64 + "\n"
        "    # via silo (pyproject.toml)\n"
        "typing-extensions==4.16.0 ; python_full_version < '3.15' \\\n"
        "    --hash=sha256:" + "1" * 64 + "\n"
        "    # via\n"
        "    #   anyio\n"
    )
    pinned = pins(lock)
    assert set(pinned) == {"uvicorn", "typing-extensions"}
    assert pinned["uvicorn"].version == Version("0.54.0")
    assert pinned["uvicorn"].hashes == ["sha256:" + "0" * 64, "sha256:" + "2" * 64]
    assert str(pinned["typing-extensions"].requirement.marker) == 'python_full_version < "3.15"'
    assert pinned["typing-extensions"].hashes == ["sha256:" + "1" * 64]
