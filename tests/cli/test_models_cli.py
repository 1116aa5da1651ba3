"""`cadenza models`, through typer's runner: define, train, report, promote, score, explain,
versions, rollback, and errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cadenza.cli import app
from cadenza.clock import SystemClock
from cadenza.errors import Conflict, ValidationFailed
from cadenza.store import Store
from tests.leads.predictive_data import definition, generate


def run(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(app, list(args), catch_exceptions=False,
                                env={"COLUMNS": "160"})
    assert result.exit_code == code, result.output
    return result.output


def test_models_commands(env: dict[str, str], store: Store, tmp_path: Path) -> None:
    generate(store, SystemClock().now_ms(), contacts=1200)
    file = tmp_path / "buyers.yaml"
    file.write_text(yaml.safe_dump(definition()))
    assert "Created model buyers" in run("models", "define", str(file))
    assert "Replaced" in run("models", "define", str(file))
    report = run("models", "train", "buyers")
    assert "version 1 (candidate, AUC 0." in report
    assert "Lift by decile" in report
    assert "Calibration" in report
    assert "count:Pricing Viewed:30d" in report
    assert "#" * 10 in report
    assert "cadenza models promote buyers 1" in report
    assert "Promoted version 1 (live" in run("models", "promote", "buyers", "1")
    scored = run("models", "score", "buyers")
    assert "Scored 1,200 contacts with version 1" in scored
    explained = run("models", "explain", "buyers", "3")
    assert "Contact 3" in explained
    assert "effect (log-odds)" in explained
    assert "v1" in run("models", "list")
    assert '"auc"' in run("models", "report", "buyers", "--json")
    assert "live" in run("models", "versions", "buyers")

    blind = definition(features=[{"attr": "employees", "type": "number"}])
    file.write_text(yaml.safe_dump(blind))
    run("models", "define", str(file))
    run("models", "train", "buyers")
    with pytest.raises(Conflict, match="worse than live version 1"):
        run("models", "promote", "buyers", "2")
    assert "forced over live version 1" in run("models", "promote", "buyers", "2", "--force")
    assert "version 1 (live" in run("models", "rollback", "buyers")


def test_models_errors(env: dict[str, str], store: Store, tmp_path: Path) -> None:
    file = tmp_path / "bad.yaml"
    file.write_text(yaml.safe_dump(definition(horizon_days=400)))
    with pytest.raises(ValidationFailed, match=r"outside 1\.\.365"):
        run("models", "define", str(file))
    file.write_text("- just\n- a list\n")
    with pytest.raises(ValidationFailed, match="must be a mapping with key, outcome"):
        run("models", "define", str(file))
    assert "No predictive models yet" in run("models", "list")
