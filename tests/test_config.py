"""Configuration is merged in one place: defaults < file < environment < flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from importer.config import Config, load_config
from importer.errors import ConfigError, ExitCode, UsageError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_any_source(tmp_path: Path) -> None:
    """With no file, environment or flag, the documented defaults apply."""
    config = load_config(None, environ={"XDG_CONFIG_HOME": str(tmp_path)})
    assert config.concurrency == Config().concurrency == 8
    assert config.api_url is None and config.rate_limit is None


def test_flags_beat_environment_beat_file(tmp_path: Path) -> None:
    """A flag wins over the environment, which wins over the config file."""
    path = write(tmp_path, 'api_url = "https://file.example"\nconcurrency = 2\nrate_limit = 5\n')
    env = {"AMILI_API_URL": "https://env.example", "AMILI_CONCURRENCY": "3"}
    config = load_config(path, environ=env, concurrency=4)
    assert config.api_url == "https://env.example"
    assert config.concurrency == 4
    assert config.rate_limit == 5.0


def test_config_from_amili_config_variable_and_section(tmp_path: Path) -> None:
    """AMILI_CONFIG names the file; settings may sit under an [amili] table."""
    text = '[amili]\nstate-dir = "~/x"\ndefault_creditor = "674dbeb208847b9501cc9138"\n'
    path = write(tmp_path, text)
    config = load_config(None, environ={"AMILI_CONFIG": str(path)})
    assert config.state_dir == Path("~/x").expanduser()
    assert config.default_creditor == "674dbeb208847b9501cc9138"


def test_a_token_is_trimmed_and_one_a_header_cannot_carry_is_refused_unquoted(
        tmp_path: Path) -> None:
    """helper-53: AMILI_ACCESS_TOKEN="$(cat token.txt)" of a file saved on Windows ends in a
    CR; requests then refused the header and its error, quoting the token, went into run.log,
    the reports and the journal. Surrounding whitespace is trimmed; a token still holding a
    space, a control character or a non-ASCII letter is refused without being shown."""
    config = load_config(environ={"AMILI_ACCESS_TOKEN": "SECRET-1\r", "AMILI_API_CODE": " c\n"})
    assert (config.access_token, config.api_code) == ("SECRET-1", "c")
    for bad in ("SECRET 2", "SECRET\x013", "SECRET\u00e94"):
        with pytest.raises(ConfigError) as info:
            load_config(environ={"AMILI_ACCESS_TOKEN": bad})
        assert "it is not shown here" in str(info.value) and "SECRET" not in str(info.value)


def test_secrets_are_not_in_repr(tmp_path: Path) -> None:
    """The token and API code never appear in the config's repr (and so never in logs)."""
    config = load_config(None, environ={"AMILI_ACCESS_TOKEN": "s3cret-token",
                                        "AMILI_API_CODE": "code-123",
                                        "XDG_CONFIG_HOME": str(tmp_path)})
    assert config.access_token == "s3cret-token"
    assert "s3cret" not in repr(config) and "code-123" not in repr(config)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("concurrency = 0\n", "concurrency"),
        ('default_creditor = "nothex"\n', "default_creditor"),
        ("colour = 1\n", "unknown setting"),
        ("api_url = \n", "not valid TOML"),
        ('login = "password"\n', "login"),
        ("settle_seconds = -1\n", "settle_seconds"),
        ("rate_limit = inf\n", "rate_limit"),
        ("settle_seconds = nan\n", "settle_seconds"),
        ("concurrency = 8.9\n", "concurrency"),
        ("concurrency = true\n", "concurrency"),
        ("connect_timeout = -1\n", "connect_timeout"),
        ("read_timeout = 0\n", "read_timeout"),
        ('log_format = "xml"\n', "log_format"),
        # Only ever for one run, as a flag: a standing setting would post overlaps twice.
        ("allow_duplicates = true\n", "allow_duplicates is not a setting; pass "
                                       "--allow-duplicates to the one run"),
    ],
)
def test_bad_config_is_a_clear_error(tmp_path: Path, text: str, needle: str) -> None:
    """A bad setting is refused with a message naming it."""
    with pytest.raises(ConfigError, match=needle):
        load_config(write(tmp_path, text), environ={})


def test_inbox_settings_from_file_and_environment(tmp_path: Path) -> None:
    """The drop-folder rules can be configured (file, environment), not only by flags."""
    path = write(tmp_path, "inbox_min_age = 300\ninbox_require_sidecar = true\n")
    config = load_config(path, environ={"AMILI_INBOX_MIN_AGE": "120"})
    assert config.inbox_min_age == 120.0 and config.inbox_require_sidecar is True
    assert load_config(path, environ={}, inbox_require_sidecar=None).inbox_require_sidecar


def test_settle_seconds_from_file_and_environment(tmp_path: Path) -> None:
    """How long a lost POST may still be stored: 60 s unless configured."""
    assert load_config(write(tmp_path, ""), environ={}).settle_seconds == 60.0
    path = write(tmp_path, "settle_seconds = 90\n")
    assert load_config(path, environ={}).settle_seconds == 90.0
    assert load_config(path, environ={"AMILI_SETTLE_SECONDS": "120"}).settle_seconds == 120.0


def test_bad_values_from_the_environment_and_flags(tmp_path: Path) -> None:
    """inf/nan in the environment are refused like in the file (exit 3); a bad flag value is
    a usage error (exit 2), even one only the combined checks find."""
    env = {"XDG_CONFIG_HOME": str(tmp_path)}
    for var in ("AMILI_RATE_LIMIT", "AMILI_SETTLE_SECONDS", "AMILI_INBOX_MIN_AGE"):
        with pytest.raises(ConfigError, match="is not a valid value"):
            load_config(None, environ=env | {var: "inf"})
    with pytest.raises(UsageError, match="default_creditor"):
        load_config(None, environ=env, default_creditor="zz")
    with pytest.raises(UsageError, match="rate_limit"):
        load_config(None, environ=env, rate_limit="nan")
    assert UsageError.exit_code == ExitCode.USAGE and ConfigError.exit_code == ExitCode.CANNOT_RUN

