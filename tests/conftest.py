"""Shared test helpers: the CLI runner that asserts exit codes, and the sandbox fixtures."""

from __future__ import annotations

pytest_plugins = ["fixtures_cli", "fixtures_sandbox"]
