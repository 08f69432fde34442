"""The command-line contract: help for every command, usage errors, exit codes."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import click
from click.testing import Result

from importer.cli import main
from importer.errors import ExitCode


def all_commands() -> list[str]:
    return sorted(main.commands)


def test_every_command_has_help_text(cli: Callable[..., Result]) -> None:
    """Each command documents itself in --help with a one-line summary."""
    assert {"validate", "run", "template"} <= set(all_commands())
    for name in all_commands():
        command = main.commands[name]
        assert command.help and len(command.help.strip()) > 20, name
        result = cli([name, "--help"])
        assert "Usage:" in result.output


def test_unknown_option_is_usage_error(cli: Callable[..., Result]) -> None:
    """A wrong option exits with 2 (usage), not with a traceback."""
    result = cli(["validate", "--no-such-option", "x.csv"], expect=ExitCode.USAGE)
    assert "No such option" in result.output


def test_unknown_kind_is_usage_error(cli: Callable[..., Result]) -> None:
    """--kind outside the three kinds (and the `credits` alias) is a usage error."""
    cli(["validate", "--kind", "invoices", "x.csv"], expect=ExitCode.USAGE)


def test_exit_codes_are_the_documented_numbers() -> None:
    """Exit codes are a stable IntEnum: 0 ok, 1 rows in error, 2 usage, 3 cannot run."""
    assert [int(c) for c in ExitCode] == [0, 1, 2, 3]


def test_help_does_not_import_pandas() -> None:
    """`amili-import --help` stays instant: pandas, pandera and requests are not imported."""
    code = ("import sys; from importer.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('pandas', 'pandera', 'requests') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_python_dash_m_runs_the_same_cli() -> None:
    """`python -m importer --help` is the same program as `amili-import`."""
    out = subprocess.run([sys.executable, "-m", "importer", "--help"], capture_output=True,
                         text=True, check=True)
    assert "validate" in out.stdout and isinstance(main, click.Group)
