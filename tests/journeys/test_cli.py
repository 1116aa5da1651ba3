"""`cadenza journeys ...` as a user runs it: happy paths and clear errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from cadenza.cli import app
from cadenza.cli.main import main
from cadenza.journeys import schema_text
from tests.journeys.conftest import EXAMPLE

SECRET = "cli-test-secret-0123456789-0123456789-abcdef"

GOOD = """\
journey: welcome-flow
entry: {event: signed_up}
steps:
  - {id: welcome, send: {channel: email, template: welcome}}
  - {id: settle, wait: 2d}
  - {id: nudge, send: {channel: email, template: nudge}}
"""

BAD = """\
journey: welcome-flow
entry: {event: signed_up}
steps:
  - {id: welcome, send: {channel: emial, template: welcome}, goto: setle}
  - {id: settle, wait: 2d, on: [mon]}
"""


@pytest.fixture
def env(store_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The CLI pointed at the test store, run from a temporary directory."""
    monkeypatch.setenv("CADENZA_DATABASE_URL", store_url)
    monkeypatch.setenv("CADENZA_SECRET_KEY", SECRET)
    monkeypatch.chdir(tmp_path)


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def run(*args: str) -> str:
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    return result.output


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_validate_a_file_without_a_database(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CADENZA_DATABASE_URL", "postgresql://nowhere.invalid/none")
    assert "✓ trial-onboarding: valid (16 steps, 6 entry triggers, 3 goals)" in \
        run("journeys", "validate", str(EXAMPLE))
    result = invoke("journeys", "validate", write(tmp_path, "bad.yaml", BAD))
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert "journey 'welcome-flow'" in lines[0]
    assert "has 3 problems" in lines[0]
    assert lines[1:] == [
        "  - step 'welcome', goto: 'setle' names no step (did you mean 'settle'?)",
        "  - step 'welcome', send.channel: 'emial' is not a channel (did you mean 'email'?); "
        "channels: email, log, sms, task, webhook",
        "  - step 'settle', on: unknown key 'on'"]
    result = invoke("journeys", "validate", "--json", write(tmp_path, "bad.yaml", BAD))
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert report["valid"] is False
    assert report["problems"][0] == {"step": "welcome", "field": "goto",
                                     "reason": "'setle' names no step (did you mean "
                                               "'settle'?)"}
    assert not (tmp_path / "cadenza.db").exists()
    assert not (tmp_path / ".cadenza-secret").exists()


def test_the_whole_cycle(env: None, tmp_path: Path, templates: None) -> None:
    path = write(tmp_path, "welcome.yaml", GOOD)
    assert "✓ welcome-flow: valid" in run("journeys", "validate", "--store", path)
    assert "Saved welcome-flow draft v1" in run("journeys", "save", path)
    assert "Published welcome-flow v1 live (sha256 " in run("journeys", "publish",
                                                            "welcome-flow")
    run("journeys", "save", write(tmp_path, "welcome.yaml", GOOD.replace("2d", "3d")))
    assert "Published welcome-flow v2 in shadow" in run("journeys", "publish", "welcome-flow",
                                                        "--shadow")
    listing = run("journeys", "list")
    assert "welcome-flow" in listing
    assert "live" in listing
    assert json.loads(run("journeys", "list", "--json"))["items"][0]["shadow_version"] == 2
    shown = run("journeys", "show", "welcome-flow")
    assert "Version 1: published (live)" in shown
    assert "wait: 2d" in shown
    assert "wait: 3d" in run("journeys", "show", "welcome-flow", "--version", "2")
    assert json.loads(run("journeys", "show", "welcome-flow", "--json"))["version"][
        "number"] == 1
    versions = run("journeys", "versions", "welcome-flow")
    assert "v1" in versions
    assert "shadow" in versions
    assert "+  wait: 3d" in run("journeys", "diff", "welcome-flow", "1", "2")
    assert "same definition" in run("journeys", "diff", "welcome-flow", "1", "1")
    assert "shadow off" in run("journeys", "shadow", "welcome-flow", "--off")
    assert "shadow v2" in run("journeys", "shadow", "welcome-flow", "--version", "2")
    assert "v2 is live" in run("journeys", "rollback", "welcome-flow", "--to", "2")
    assert "Moved 0 enrollments of welcome-flow from v1 to v2" in run(
        "journeys", "migrate", "welcome-flow", "--from", "1", "--to", "2",
        "--map", "settle=settle")
    assert "is paused" in run("journeys", "pause", "welcome-flow")
    assert "is live" in run("journeys", "resume", "welcome-flow")
    assert "archived; 0 active enrollments ended" in run("journeys", "archive",
                                                         "welcome-flow")


def test_schema_prints_the_committed_schema() -> None:
    assert invoke("journeys", "schema").output == schema_text()


def test_errors_are_one_clear_line(env: None, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch,
                                   add_templates: Callable[..., None]) -> None:
    def fails(*args: str) -> str:
        monkeypatch.setattr("sys.argv", ["cadenza", *args])
        with pytest.raises(SystemExit) as exited:
            main()
        assert exited.value.code == 1
        return capsys.readouterr().err

    assert "journey 'nope' not found" in fails("journeys", "publish", "nope")
    path = write(tmp_path, "welcome.yaml", GOOD)
    run("journeys", "save", path)
    assert "welcome-flow v4' not found" in fails("journeys", "publish", "welcome-flow",
                                                "--version", "4")
    result = invoke("journeys", "publish", "welcome-flow")  # templates missing
    assert result.exit_code == 1
    assert "send.template: 'welcome' names no template" in result.output
    add_templates(("welcome", "email"), ("nudge", "email"))
    run("journeys", "publish", "welcome-flow")
    assert "already published" in fails("journeys", "publish", "welcome-flow",
                                        "--version", "1")
    assert "must be old=new" in fails("journeys", "migrate", "welcome-flow", "--from", "1",
                                      "--to", "2", "--map", "settle")
    assert "give --version N, or --off" in fails("journeys", "shadow", "welcome-flow")
    result = invoke("journeys", "save", write(tmp_path, "bad.yaml", BAD))
    assert result.exit_code == 1
    assert "has 3 problems" in result.output
    broken = write(tmp_path, "broken.yaml", "journey: [x\n")
    assert "yaml: line 2, column 1" in fails("journeys", "validate", broken)
