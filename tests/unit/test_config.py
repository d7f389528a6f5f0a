from __future__ import annotations

import contextlib
import io
import re
import tomllib
from dataclasses import fields
from pathlib import Path

import pytest

from silo.cli.main import _parser, main
from silo.config import ConfigError, Settings, load_settings, parse_config, read_config


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


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "silo.toml"
    path.write_text(text)
    return path


def test_flags_win_over_the_environment_which_wins_over_the_file(tmp_path: Path) -> None:
    file = read_config(write(tmp_path, 'port = 9801\nhost = "10.0.0.1"\nkeep_alive_s = 5\nregion = "eu-west-1"\n'))
    s = load_settings({}, {}, file)
    assert (s.port, s.host, s.keep_alive_s, s.region) == (9801, "10.0.0.1", 5, "eu-west-1")
    s = load_settings({"port": 9900}, {"SILO_PORT": "9802", "SILO_HOST": "10.0.0.2"}, file)
    assert (s.port, s.host, s.keep_alive_s) == (9900, "10.0.0.2", 5)
    assert load_settings({}, {}, {}).keep_alive_s == 600, "without a file, the defaults"


def test_a_file_gives_every_kind_of_setting(tmp_path: Path) -> None:
    text = 'data_dir = "/srv/silo"\nmetrics_tenant_labels = true\nlog_format = "JSON"\nsandbox = "process"\n'
    s = load_settings({}, {}, read_config(write(tmp_path, text)))
    assert (s.data_dir, s.metrics_tenant_labels, s.sandbox) == (Path("/srv/silo"), True, "process")
    assert s.log_format == "json", "a choice is taken in any case"


def test_an_unknown_key_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"silo\.toml: unknown key 'keepalive_s'; did you mean 'keep_alive_s'\?"):
        read_config(write(tmp_path, "keepalive_s = 5\n"))
    with pytest.raises(ConfigError, match="unknown key 'http'"):
        read_config(write(tmp_path, "[http]\nidle_s = 5\n"))


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('port = "9700"', "port must be a whole number, not a string ('9700')"),
        ("port = 9700.5", "port must be a whole number, not a float (9700.5)"),
        ("port = true", "port must be a whole number, not a boolean"),
        ("metrics_tenant_labels = 1", "metrics_tenant_labels must be true or false, not an integer (1)"),
        ("host = 127", "host must be a string, not an integer (127)"),
        ("data_dir = [1]", "data_dir must be a path, not an array"),
    ],
)
def test_a_value_of_the_wrong_type_is_refused_by_name(tmp_path: Path, line: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        read_config(write(tmp_path, line + "\n"))
    assert str(caught.value) == f"{tmp_path / 'silo.toml'}: {message}"


def test_a_file_that_is_not_toml_or_not_there_is_explained(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not valid TOML"):
        read_config(write(tmp_path, "port = \n"))
    with pytest.raises(ConfigError, match=r"cannot read the config file .*missing\.toml: No such file"):
        read_config(tmp_path / "missing.toml")


def test_a_choice_is_checked_wherever_it_comes_from(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="the config file's log_format must be one of text, json, got 'xml'"):
        load_settings({}, {}, read_config(write(tmp_path, 'log_format = "xml"\n')))
    with pytest.raises(ConfigError, match="SILO_LOG_LEVEL must be one of debug, info, warning, error, critical"):
        load_settings({}, {"SILO_LOG_LEVEL": "loud"})
    assert load_settings({}, {"SILO_LOG_LEVEL": "DEBUG"}).log_level == "debug"


def test_a_boolean_variable_is_true_or_false() -> None:
    assert load_settings({}, {"SILO_METRICS_TENANT_LABELS": "yes"}).metrics_tenant_labels is True
    assert load_settings({}, {"SILO_METRICS_TENANT_LABELS": "0"}).metrics_tenant_labels is False
    with pytest.raises(ConfigError, match="SILO_METRICS_TENANT_LABELS must be true or false, got 'maybe'"):
        load_settings({}, {"SILO_METRICS_TENANT_LABELS": "maybe"})


def serve_help() -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        main(["serve", "--help"])
    return " ".join(out.getvalue().split())  # argparse wraps lines


def test_every_setting_is_a_flag_a_variable_and_a_key_documented_in_help() -> None:
    text = serve_help()
    for f in fields(Settings):
        assert f.metadata.get("help"), f"Settings.{f.name} has no help text: declare it with silo.config.setting()"
        flag = "--" + f.name.replace("_", "-")
        assert f"{flag} " in text or f"{flag}," in text, f"silo serve --help has no {flag}"
        assert f"SILO_{f.name.upper()}; key {f.name})" in text, f"--help does not name {f.name}'s variable and key"
        # The key is accepted in a file, with a value of its default's type.
        default = getattr(Settings(), f.name)
        value = str(default) if isinstance(default, Path) else default
        assert parse_config({f.name: value}, "test") == {f.name: default}


def test_every_flag_reaches_its_setting(tmp_path: Path) -> None:
    """Each flag, given a value that is not its default, changes that setting and no other."""
    parser_args = ["serve", "--config", str(tmp_path / "x.toml")]
    wanted: dict[str, object] = {}
    for f in fields(Settings):
        default = getattr(Settings(), f.name)
        flag = "--" + f.name.replace("_", "-")
        if isinstance(default, bool):
            parser_args.append(flag if not default else "--no-" + flag[2:])
            wanted[f.name] = not default
        elif isinstance(default, int):
            parser_args += [flag, str(default + 1)]
            wanted[f.name] = default + 1
        elif isinstance(default, Path):
            parser_args += [flag, str(tmp_path)]
            wanted[f.name] = tmp_path
        else:
            choices = f.metadata.get("choices") or (default + "x",)
            other = next(c for c in (*choices, default + "x") if c != default)
            parser_args += [flag, other]
            wanted[f.name] = other
    args = _parser().parse_args(parser_args)
    assert args.config == tmp_path / "x.toml"
    s = load_settings(vars(args), {})
    assert {name: getattr(s, name) for name in wanted} == wanted


EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "silo.toml"


def test_the_example_config_has_every_key_and_parses() -> None:
    text = EXAMPLE.read_text()
    # Every key appears, commented out (`# key = value`, its default) or set; uncommented, the file is valid.
    uncommented = re.sub(r"^# ([a-z0-9_]+ = )", r"\1", text, flags=re.MULTILINE)
    values = parse_config(tomllib.loads(uncommented), str(EXAMPLE))
    assert set(values) == {f.name for f in fields(Settings)}
    defaults = Settings()
    for key in re.findall(r"^# ([a-z0-9_]+) = ", text, flags=re.MULTILINE):
        assert values[key] == getattr(defaults, key), f"the example's commented {key} is not its default"
    set_here = parse_config(tomllib.loads(text), str(EXAMPLE))
    assert set_here == {"data_dir": Path("/var/lib/silo"), "log_format": "json"}
