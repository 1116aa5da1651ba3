"""`cadenza segments`, through typer's runner."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cadenza.cli import app
from cadenza.clock import SystemClock
from cadenza.events import EventService
from cadenza.store import Store
from tests.segments.segment_support import declare, identify


def run(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result.output


@pytest.fixture
def people(store: Store) -> dict[str, int]:
    """Two contacts on the real clock (the CLI uses it too)."""
    clock = SystemClock()
    declare(store, clock, plan="string", name="string")  # type: ignore[arg-type]
    events = EventService(store, clock)
    return {"ann": identify(events, "ann", plan="pro", email="ann@example.com",
                            name="@SUM(A1)"),
            "bob": identify(events, "bob", plan="basic")}


def test_define_preview_lists_and_export(env: dict[str, str], people: dict[str, int],
                                         tmp_path: Path) -> None:
    definition = tmp_path / "pros.yaml"
    definition.write_text("key: pros\nname: Pros\ncondition: {attr: plan, eq: pro}\n")
    assert "1 contacts match now" in run("segments", "estimate", str(definition))
    assert "Created" in run("segments", "create", str(definition))
    assert "pros" in run("segments", "list")
    assert '"member_count": 1' in run("segments", "show", "pros", "--json")
    assert "ann@example.com" in run("segments", "members", "pros")
    assert "entered" in run("segments", "history", "pros")
    assert "entered" in run("segments", "history", "--contact", str(people["ann"]))
    assert "pros" in run("segments", "recompute")
    assert "pros" in run("segments", "drift")
    out = tmp_path / "pros.csv"
    assert "Wrote 1 members" in run("segments", "export", "pros", "--out", str(out),
                                    "--attr", "name", "--attr", "plan")
    with out.open(newline="") as handle:
        assert list(csv.reader(handle))[1][3:] == ["'@SUM(A1)", "pro"]
    static = tmp_path / "list.json"
    static.write_text('{"key": "vips", "kind": "static"}')
    run("segments", "create", str(static))
    assert "1 added" in run("segments", "add", "vips", "--user-id", "bob")
    upload = tmp_path / "upload.csv"
    upload.write_text("email\nann@example.com\nnot-an-email\n")
    output = run("segments", "upload", "vips", str(upload))
    assert "1 added" in output
    assert "1 unknown" in output
    assert "1 removed" in run("segments", "remove", "vips", "--id", str(people["bob"]))
    assert "Archived" in run("segments", "archive", "vips")


def test_bad_files_are_one_clear_line(env: dict[str, str], people: dict[str, int],
                                      tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("key: x\ncondition: {attr: paln, eq: pro}\n")
    result = CliRunner().invoke(app, ["segments", "create", str(bad)])
    assert result.exit_code != 0
    assert "did you mean 'plan'" in str(result.exception)
    broken = tmp_path / "broken.yaml"
    broken.write_text("key: [unclosed\n")
    result = CliRunner().invoke(app, ["segments", "create", str(broken)])
    assert result.exit_code != 0
    assert "line" in str(result.exception)
