"""The emergency stop over HTTP and from the CLI, each change in the audit trail."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from cadenza.cli import app
from cadenza.clock import FakeClock
from cadenza.governance import AuditService
from cadenza.store import Store
from tests.api.conftest import SECRET, Keys, base_url, client, keys, settings

__all__ = ["base_url", "client", "keys", "settings"]


def test_stop_and_resume_over_http(client: httpx.Client, keys: Keys, store: Store,
                                   clock: FakeClock) -> None:
    headers = keys.admin_headers
    assert client.get("/api/sends", headers=headers).json() == {"stopped": False}
    refused = client.post("/api/sends/stop", json={"reason": ""}, headers=headers)
    assert refused.status_code == 400
    assert "reason" in refused.text
    stopped = client.post("/api/sends/stop", json={"reason": "bad link"}, headers=headers)
    assert stopped.status_code == 200
    assert stopped.json()["reason"] == "bad link"
    assert client.get("/api/sends", headers=headers).json()["stopped"] is True
    resumed = client.post("/api/sends/resume", headers=headers).json()
    assert resumed["lifted"]["reason"] == "bad link"
    assert client.post("/api/sends/stop", json={"reason": "x"}).status_code == 401
    trail = AuditService(store, clock, SECRET)
    assert [e.action for e in trail.entries()] == ["sends.resume", "sends.stop"]
    assert trail.verify().ok


def test_stop_and_resume_from_the_cli(store_url: str, store: Store, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CADENZA_DATABASE_URL", store_url)
    monkeypatch.setenv("CADENZA_SECRET_KEY", SECRET)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    assert "running" in runner.invoke(app, ["sends", "status"]).output
    out = runner.invoke(app, ["sends", "stop", "--reason", "incident 7"]).output
    assert "sends stopped" in out
    assert "incident 7" in runner.invoke(app, ["sends", "status"]).output
    assert "resumed" in runner.invoke(app, ["sends", "resume"]).output
    assert "were not stopped" in runner.invoke(app, ["sends", "resume"]).output
