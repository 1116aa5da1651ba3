"""`cadenza leads`: stages, reps, rules, route, assignments, touch, through typer's runner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cadenza.cli import app
from cadenza.clock import SystemClock
from cadenza.errors import CadenzaError
from cadenza.store import Store
from tests.leads.lifecycle_support import contact, declare

SECRET = "cli-test-secret-0123456789-0123456789-abcdef"


@pytest.fixture
def env(store_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The CLI pointed at the test store."""
    monkeypatch.setenv("CADENZA_DATABASE_URL", store_url)
    monkeypatch.setenv("CADENZA_SECRET_KEY", SECRET)
    monkeypatch.chdir(tmp_path)


def run(*args: str) -> str:
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def fails(*args: str) -> str:
    """The message of the Cadenza error the command stops with (`cadenza` prints it)."""
    with pytest.raises(CadenzaError) as caught:
        CliRunner().invoke(app, list(args), catch_exceptions=False)
    return caught.value.message


def test_stages_from_a_file_apply_and_move(env: None, store: Store, tmp_path: Path) -> None:
    now = SystemClock().now_ms()
    declare(store, now, "fit", kind="number")
    assert "(defaults)" in run("leads", "stages", "list")
    stages = tmp_path / "stages.yaml"
    stages.write_text("stages:\n  - {key: lead, name: Lead}\n  - key: mql\n    name: MQL\n"
                      "    rules:\n      - {name: fit, when: {attr: fit, gte: 60}}\n"
                      "  - {key: customer, name: Customer}\n")
    assert "Saved" in run("leads", "stages", "set", str(stages))
    hot = contact(store, now, fit=80)
    cold = contact(store, now, fit=5)
    assert "2 contacts evaluated, 1 moved" in run("leads", "stages", "apply")
    assert "1 moved" in run("leads", "stages", "move", str(cold), "--to", "lead",
                            "--reason", "webinar attendee")
    shown = json.loads(run("leads", "contact", str(hot), "--json"))
    assert shown["stage"] == "mql"
    assert shown["history"][0]["detail"]["rule"] == "fit"
    bad = tmp_path / "bad.yaml"
    bad.write_text("stages:\n  - {key: lead}\n  - {key: lead}\n")
    assert "unique" in fails("leads", "stages", "set", str(bad))


def test_reps_rules_route_and_touch(env: None, store: Store, tmp_path: Path) -> None:
    assert "Added" in run("leads", "reps", "add", "ann", "--name", "Ann", "--capacity", "5",
                          "--attr", "territory=DE")
    run("leads", "reps", "add", "bob", "--name", "Bob")
    assert "weight" in fails("leads", "reps", "add", "cy", "--weight", "0")
    assert "away until marked back" in run("leads", "reps", "away", "bob")
    listing = run("leads", "reps", "list")
    assert "territory=DE" in listing
    assert "away" in listing
    rule = tmp_path / "rule.yaml"
    rule.write_text("pool: {reps: [ann, bob]}\nstrategy: round_robin\nsla: 4h\n")
    assert "Valid" in run("leads", "rules", "validate", "default", str(rule))
    assert "Created" in run("leads", "rules", "set", "default", str(rule))
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("pool: {reps: [ann, zed]}\n")
    assert "not a sales rep" in fails("leads", "rules", "set", "other", str(wrong))
    ids = [contact(store, SystemClock().now_ms()) for _ in range(2)]
    routed = run("leads", "route", *map(str, ids))
    assert "2 assigned" in routed
    assert "-> ann" in routed
    assert "0 assigned, 0 unassigned, 2 already assigned" in run("leads", "route",
                                                                 *map(str, ids))
    page = json.loads(run("leads", "assignments", "--rep", "ann", "--json"))
    assert [a["sla_state"] for a in page["items"]] == ["on_time", "on_time"]
    first = page["items"][0]["id"]
    assert "touched" in run("leads", "touch", str(first), "--note", "called")
    assert "was touched already" in run("leads", "touch", str(first))
    assert "closed" in run("leads", "close", str(first))
    assert "0 lapsed" in run("leads", "sla-check")
    assert "not found" in fails("leads", "touch", "999999")
