"""`amili-import doctor`: one ok/warn/FAIL line per check, exit 0 unless a check failed."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from cryptography.hazmat.primitives.asymmetric import ec
from fixtures_sandbox import API_CODE, TOKEN
from test_auth import public_pem, write_key

from importer.config import ENV
from importer.sandbox.server import RunningSandbox

Cli = Callable[..., Result]


def env_for(tmp_path: Path, **values: str) -> dict[str, str | None]:
    """An environment with only the given AMILI_* settings (and no user config file)."""
    env: dict[str, str | None] = {var: None for var in ENV}
    env.update({"AMILI_CONFIG": None, "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
                "AMILI_STATE_DIR": str(tmp_path / "state")})
    env.update(values)
    return env


def lines(result: Result) -> dict[str, str]:
    """Check name → its whole line, from the doctor's output (stdout only)."""
    out: dict[str, str] = {}
    for line in result.stdout.splitlines():
        status, _, rest = line.partition(" ")
        name = rest.strip().split(":", 1)[0]
        out[name] = line
        assert status in {"ok", "warn", "FAIL"}, line
    return out


def test_all_ok_with_a_ready_token(cli: Cli, sandbox: RunningSandbox, tmp_path: Path) -> None:
    """Token config against the sandbox: every line ok, the state directory created, exit 0."""
    env = env_for(tmp_path, AMILI_API_URL=sandbox.url, AMILI_ACCESS_TOKEN=TOKEN)
    result = cli(["doctor"], expect=0, env=env)
    got = lines(result)
    assert list(got) == ["config", "api_url", "login method", "login", "api access", "clock",
                         "state directory", "journal"]
    assert "none yet in" in got["journal"]
    assert got["clock"].startswith("ok    clock: in step with the API's (within ")
    assert all(line.startswith("ok ") for line in got.values())
    assert "AMILI_API_URL, AMILI_ACCESS_TOKEN, AMILI_STATE_DIR" in got["config"]
    assert "5 case(s) visible" in got["api access"]
    assert (tmp_path / "state").is_dir()
    assert TOKEN not in result.output


def test_a_clock_hours_off_is_a_warning(cli: Cli, sandbox: RunningSandbox, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine's clock two hours ahead of the API's (its Date header): a warn line that
    says by how much, still exit 0."""
    import datetime as dt

    import importer.client

    class Ahead(dt.datetime):
        @classmethod
        def now(cls, tz: Any = None) -> dt.datetime:  # type: ignore[override]
            return dt.datetime.now(tz) + dt.timedelta(hours=2)

    monkeypatch.setattr(importer.client, "datetime", Ahead)
    env = env_for(tmp_path, AMILI_API_URL=sandbox.url, AMILI_ACCESS_TOKEN=TOKEN)
    got = lines(cli(["doctor"], expect=0, env=env))
    assert got["clock"].startswith("warn  clock: this machine's clock is 72")
    assert "s ahead of the API's: keep it in sync (NTP)" in got["clock"]


def test_jwt_login_with_open_key_file_warns(cli: Cli, make_sandbox: Callable[..., RunningSandbox],
                                            tmp_path: Path) -> None:
    """A working JWT setup whose key file others can read: a warn line, still exit 0."""
    key = ec.generate_private_key(ec.SECP384R1())
    sb = make_sandbox(token=None, public_keys=[public_pem(key)], token_lifetime=900)
    path = write_key(tmp_path / "key.pem", key, 0o644)
    env = env_for(tmp_path, AMILI_API_CODE=API_CODE, AMILI_PRIVATE_KEY_FILE=str(path))
    result = cli(["doctor", "--api-url", sb.url], expect=0, env=env)
    got = lines(result)
    assert got["key permissions"].startswith("warn") and "chmod 600" in got["key permissions"]
    assert got["private key"].startswith("ok") and "EC P-384" in got["private key"]
    assert "ES384" in got["private key"]
    assert got["login"].startswith("ok") and "900 s" in got["login"]
    assert "flags (--api-url)" in got["config"]
    assert API_CODE not in result.output


def test_missing_api_url_and_login_fail(cli: Cli, tmp_path: Path) -> None:
    """Nothing configured: api_url and login method FAIL with what to set; exit 3."""
    got = lines(cli(["doctor"], expect=3, env=env_for(tmp_path)))
    assert got["api_url"].startswith("FAIL") and "AMILI_API_URL" in got["api_url"]
    assert got["login method"].startswith("FAIL") and "AMILI_API_CODE" in got["login method"]
    assert got["login"].startswith("FAIL") and "skipped" in got["login"]
    assert got["state directory"].startswith("ok")


def test_plain_http_to_remote_host_fails(cli: Cli, tmp_path: Path) -> None:
    """http:// to a non-loopback host is a FAIL line naming allow_http (nothing is sent)."""
    env = env_for(tmp_path, AMILI_API_URL="http://api.example.com", AMILI_ACCESS_TOKEN="x")
    got = lines(cli(["doctor"], expect=3, env=env))
    assert got["api_url"].startswith("FAIL") and "allow_http" in got["api_url"]


def test_refused_token_fails_api_access(cli: Cli, sandbox: RunningSandbox,
                                        tmp_path: Path) -> None:
    """A token the API refuses: the api access line FAILs saying so; exit 3."""
    env = env_for(tmp_path, AMILI_API_URL=sandbox.url, AMILI_ACCESS_TOKEN="stale-token")
    result = cli(["doctor"], expect=3, env=env)
    got = lines(result)
    assert got["api access"].startswith("FAIL") and "refused (expired?)" in got["api access"]
    assert "stale-token" not in result.output


def test_unusable_key_and_state_dir_fail(cli: Cli, tmp_path: Path) -> None:
    """A key file that is not a key and a state dir that cannot be created: two FAIL lines."""
    junk = tmp_path / "junk.pem"
    junk.write_text("not a key")
    os.chmod(junk, 0o600)
    blocker = tmp_path / "file"
    blocker.write_text("")
    env: dict[str, Any] = env_for(tmp_path, AMILI_API_URL="https://api.example.com",
                                  AMILI_API_CODE="c", AMILI_PRIVATE_KEY_FILE=str(junk),
                                  AMILI_STATE_DIR=str(blocker / "state"))
    got = lines(cli(["doctor"], expect=3, env=env))
    assert got["key permissions"].startswith("ok")
    assert got["private key"].startswith("FAIL") and "does not hold" in got["private key"]
    assert got["state directory"].startswith("FAIL") and "not writable" in got["state directory"]


def test_invalid_config_file_is_one_fail_line(cli: Cli, tmp_path: Path) -> None:
    """A config that cannot be merged is a single FAIL line naming the file; exit 3."""
    bad = tmp_path / "bad.toml"
    bad.write_text("concurrency = [\n")
    result = cli(["--config", str(bad), "doctor"], expect=3, env=env_for(tmp_path))
    assert result.output.startswith("FAIL  config: config file") and "bad.toml" in result.output
