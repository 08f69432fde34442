"""Shared test helpers: the CLI runner that asserts exit codes, the sandbox fixtures, and
an API (tests/doc_server.py) whose reads fail at first."""

from __future__ import annotations

pytest_plugins = ["fixtures_cli", "fixtures_sandbox", "fixtures_doc_api"]
