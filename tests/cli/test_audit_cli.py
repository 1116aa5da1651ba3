"""`cadenza audit`: list, export the head, verify (and name the broken entry)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from cadenza.cli import app
from cadenza.clock import FakeClock
from cadenza.errors import ValidationFailed
from cadenza.governance.audit import AuditService
from cadenza.store import Store

SECRET = "cli-audit-secret-0123456789-0123456789-abcdef"


@pytest.fixture
def env(store_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    monkeypatch.setenv("CADENZA_DATABASE_URL", store_url)
    monkeypatch.setenv("CADENZA_SECRET_KEY", SECRET)
    monkeypatch.chdir(tmp_path)
    return {**os.environ}


def run(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result.output


def test_verify_list_and_head_through_the_cli(env: dict[str, str], store: Store,
                                              tmp_path: Path) -> None:
    service = AuditService(store, FakeClock(), SECRET)
    with store.begin() as conn:
        for i in range(4):
            service.record(conn, "user:ann", "journey.publish", "journey", f"j{i}",
                           {"version": i})
    assert "4 entries" in run("audit", "verify")
    listed = json.loads(run("audit", "list", "--object", "journey:j2", "--json"))
    assert [e["object"] for e in listed] == ["journey:j2"]
    head_file = tmp_path / "head.json"
    run("audit", "head", "--out", str(head_file))
    assert json.loads(head_file.read_text())["id"] == 4
    with store.begin() as conn:
        conn.execute(sa.text("DELETE FROM audit_log WHERE id = 4"))
    assert "intact" in run("audit", "verify")  # a shorter chain is still a chain...
    out = run("audit", "verify", "--head", str(head_file), code=1)  # ...but not the exported one
    assert "broken at entry 4" in out
    with store.begin() as conn:
        conn.execute(sa.text("UPDATE audit_log SET actor = 'user:eve' WHERE id = 2"))
    assert "broken at entry 2" in run("audit", "verify", code=1)


def test_a_bad_head_file_is_a_clear_error(env: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    result = CliRunner().invoke(app, ["audit", "verify", "--head", str(bad)])
    # `cadenza` prints CadenzaError messages; the runner hands the error over as it is.
    assert isinstance(result.exception, ValidationFailed)
    assert result.exception.field == "--head"
    assert "not a head exported" in result.exception.message
