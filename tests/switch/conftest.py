"""Fixtures of the switch tests; the helpers live in switchkit.py (a unique module name,
so that other test folders' conftest modules cannot shadow them)."""

from __future__ import annotations

import pytest

from payswitch.switch import logs


@pytest.fixture
def dsn(pg_dsn: str) -> str:
    return pg_dsn


@pytest.fixture(autouse=True)
def json_logs():
    """The switch's JSON lines on stderr: pytest shows them when a test fails."""
    logs.setup("DEBUG")
    yield
