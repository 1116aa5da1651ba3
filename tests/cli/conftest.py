"""CLI fixtures: the environment that points `cadenza` at the test store."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SECRET = "cli-test-secret-0123456789-0123456789-abcdef"


@pytest.fixture
def env(store_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """Environment pointing the CLI at the test store (and the working directory at a
    temporary one)."""
    monkeypatch.setenv("CADENZA_DATABASE_URL", store_url)
    monkeypatch.setenv("CADENZA_SECRET_KEY", SECRET)
    monkeypatch.chdir(tmp_path)
    return {**os.environ, "CADENZA_DATABASE_URL": store_url, "CADENZA_SECRET_KEY": SECRET}
