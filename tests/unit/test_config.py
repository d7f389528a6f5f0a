from __future__ import annotations

from pathlib import Path

import pytest

from silo.config import load_settings


def test_defaults() -> None:
    s = load_settings({}, {})
    assert (s.host, s.port, s.sandbox) == ("127.0.0.1", 9700, "auto")
    assert s.data_dir == Path(".silo").resolve()


def test_environment_then_flags() -> None:
    env = {"SILO_PORT": "9800", "SILO_HOST": "0.0.0.0", "SILO_DATA_DIR": "/srv/silo"}
    s = load_settings({}, env)
    assert (s.host, s.port, s.data_dir) == ("0.0.0.0", 9800, Path("/srv/silo"))
    s = load_settings({"port": 9900, "host": None}, env)
    assert (s.host, s.port) == ("0.0.0.0", 9900)


def test_bad_number_is_explained() -> None:
    with pytest.raises(ValueError, match="SILO_PORT must be a whole number"):
        load_settings({}, {"SILO_PORT": "high"})
