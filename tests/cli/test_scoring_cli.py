"""`cadenza scores` through typer's runner: save, list, show, score, top, distribution,
explain, archive, and a bad file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cadenza.cli import app
from cadenza.errors import ValidationFailed
from cadenza.store import Store
from tests.leads.scoring_support import add_contacts, add_events, declare

SECRET = "cli-test-secret-0123456789-0123456789-abcdef"
FIT = """\
key: fit
name: Fit
rules:
  - id: pro
    when: {attr: plan, eq: pro}
    points: 30
  - id: demo
    event: Demo Requested
    points: 10
    cap: {points: 20, per: 1w}
grades:
  - {grade: A, min: 30}
  - {grade: B}
"""


@pytest.fixture
def env(store_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    monkeypatch.setenv("CADENZA_DATABASE_URL", store_url)
    monkeypatch.setenv("CADENZA_SECRET_KEY", SECRET)
    monkeypatch.chdir(tmp_path)
    return dict(os.environ)


def run(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == code, result.output
    return result.output


def test_scores_commands(env: dict[str, str], store: Store, tmp_path: Path) -> None:
    declare(store, plan="string")
    add_contacts(store, {1: {"plan": "pro"}, 2: {"plan": "free"}})
    add_events(store, [(2, "Demo Requested", 1_767_225_600_000, {})])
    (tmp_path / "fit.yaml").write_text(FIT)
    assert "Valid" in run("scores", "validate", "fit.yaml")
    saved = run("scores", "save", "fit.yaml", "--score")
    assert "Created" in saved
    assert "fit" in saved
    assert "fit" in run("scores", "list")
    assert "20 per 7d" in run("scores", "show", "fit")
    listed = json.loads(run("scores", "top", "fit", "--json"))
    assert [i["contact_id"] for i in listed["items"]] == [1, 2]
    assert "grades: A: 1, B: 1" in run("scores", "distribution", "fit", "--buckets", "3")
    explained = run("scores", "explain", "1")
    assert "pro" in explained
    assert "yes" in explained
    assert json.loads(run("scores", "score", "--json"))["items"][0]["scored"] == 2
    assert "Archived" in run("scores", "archive", "fit")


def test_a_bad_file_names_the_field(env: dict[str, str], store: Store, tmp_path: Path) -> None:
    declare(store, plan="string")
    (tmp_path / "bad.yaml").write_text(FIT.replace("per: 1w", "per: 0s"))
    result = CliRunner().invoke(app, ["scores", "validate", "bad.yaml"])
    assert isinstance(result.exception, ValidationFailed)  # main() prints it on one line
    assert result.exception.field == "rules.1.cap.per"
