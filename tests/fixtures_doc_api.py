"""A fixture for runs against tests/doc_server.py, the independent API server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fixtures_sandbox import TOKEN


@pytest.fixture
def unread_api(tmp_path: Path) -> Iterator[tuple[Any, dict[str, str]]]:
    """An API (tests/doc_server.py) that stores what is posted but does not answer reads at
    first (set ``server.state.variant.fail_gets = 0`` to let them through), and the
    environment of a run against it, with short retry pauses."""
    from doc_server import DocServer, Variant

    server = DocServer(Variant(fail_gets=503))
    quick = tmp_path / "quick.toml"
    quick.write_text("backoff_base = 0.01\nbackoff_max = 0.02\n", encoding="utf-8")
    try:
        yield server, {"AMILI_API_URL": server.url, "AMILI_ACCESS_TOKEN": TOKEN,
                       "AMILI_STATE_DIR": str(tmp_path / "state"), "AMILI_CONFIG": str(quick)}
    finally:
        server.close()
