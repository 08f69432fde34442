"""Run the real CLI in a subprocess-free way and assert on its exit code."""

from __future__ import annotations

import traceback
from collections.abc import Callable, Sequence

import pytest
from click.testing import CliRunner, Result


@pytest.fixture
def cli() -> Callable[..., Result]:
    """Invoke ``amili-import ARGS`` and assert the exit code, printing output when it differs."""
    from importer.cli import main

    def run(args: Sequence[str], expect: int = 0, env: dict[str, str] | None = None) -> Result:
        result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=True)
        if result.exit_code != expect:
            exc = ""
            if result.exc_info and result.exc_info[0] is not SystemExit:
                exc = "".join(traceback.format_exception(*result.exc_info))
            raise AssertionError(
                f"exit {result.exit_code} != {expect}\n--- output ---\n{result.output}\n{exc}"
            )
        return result

    return run
