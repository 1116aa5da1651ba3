"""The `cadenza` command, run as a user would (a subprocess) and through typer's runner."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from typer.testing import CliRunner

from cadenza.cli import app
from cadenza.store.migrate import alembic_config
from tests.cli.conftest import SECRET


def run(*args: str) -> str:
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_keys_create_list_revoke(env: dict[str, str]) -> None:
    output = run("keys", "create", "--kind", "write", "--name", "website")
    plaintext = output.strip().splitlines()[-1]
    assert plaintext.startswith("cdz_w_")
    listing = run("keys", "list")
    assert "website" in listing
    assert plaintext not in listing  # never shown again
    run("keys", "revoke", "1")
    assert "yes" in run("keys", "list")


def test_import_show_search_and_events(env: dict[str, str], tmp_path: Path) -> None:
    people = tmp_path / "people.csv"
    people.write_text("email,user_id,plan,consent_email_marketing\n"
                      "ada@example.com,u1,pro,yes\n"
                      "grace@example.com,u2,free,no\n")
    output = run("contacts", "import", str(people))
    assert "2 created" in output
    assert "1 unchanged" not in output
    again = run("contacts", "import", str(people))
    assert "2 unchanged" in again
    shown = run("contacts", "show", "ada@example.com")
    assert "plan: pro" in shown
    assert "email/marketing=opted_in" in shown
    found = run("contacts", "search", "--attr", "plan:free", "--json")
    assert "grace@example.com" in found
    assert "ada@example.com" not in found
    assert "ada@example.com" in run("contacts", "search", "--q", "ad")
    assert "Recent events" in run("contacts", "show", "u1")
    run("events", "list", "--limit", "5")


def test_bad_rows_exit_2_with_a_report(env: dict[str, str], tmp_path: Path) -> None:
    people = tmp_path / "people.csv"
    people.write_text("email\nnot-an-email\nok@example.com\n")
    report = tmp_path / "errors.csv"
    result = CliRunner().invoke(app, ["contacts", "import", str(people), "--errors",
                                      str(report)])
    assert result.exit_code == 2
    assert "1 created" in result.output
    assert report.read_text().splitlines()[1].startswith("2,email,")


def test_fields_and_suppressions(env: dict[str, str]) -> None:
    run("fields", "declare", "plan", "--type", "enum", "--value", "free", "--value", "pro")
    assert "free, pro" in run("fields", "list")
    run("suppressions", "add", "Bounce@Example.com", "--reason", "hard_bounce")
    assert "bounce@example.com" in run("suppressions", "list")
    assert "Removed" in run("suppressions", "remove", "bounce@example.com")


def test_errors_are_one_clear_line_and_exit_1(env: dict[str, str]) -> None:
    bad = {**env, "CADENZA_SECRET_KEY": "short"}
    result = subprocess.run([sys.executable, "-m", "cadenza", "keys", "list"], env=bad,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert "CADENZA_SECRET_KEY" in result.stderr
    assert "32 characters" in result.stderr
    assert "Traceback" not in result.stderr
    missing = subprocess.run([sys.executable, "-m", "cadenza", "contacts", "show", "424242"],
                             env=env, capture_output=True, text=True, timeout=60, check=False)
    assert missing.returncode == 1
    assert "contact 424242 not found" in missing.stderr


def test_db_upgrade_on_an_empty_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                         ) -> None:
    monkeypatch.setenv("CADENZA_DATABASE_URL", f"sqlite:///{tmp_path / 'fresh.db'}")
    monkeypatch.setenv("CADENZA_SECRET_KEY", SECRET)
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None
    assert "empty" in run("db", "current")
    assert f"Database at {head}" in run("db", "upgrade")
    assert head in run("db", "current")


def test_show_explains_merges(env: dict[str, str], store_url: str) -> None:
    from cadenza.clock import SystemClock
    from cadenza.events import EventService
    from cadenza.store import Store

    store = Store.create(store_url)
    events = EventService(store, SystemClock())
    events.ingest([{"type": "track", "anonymousId": "visitor-1", "event": "Viewed",
                    "messageId": "m1"}])
    events.ingest([{"type": "identify", "userId": "u-1", "messageId": "m2"}])
    events.ingest([{"type": "alias", "previousId": "visitor-1", "userId": "u-1",
                    "messageId": "m3"}])
    events.ingest([{"type": "identify", "userId": "u-2", "anonymousId": "visitor-1",
                    "messageId": "m4"}])
    store.dispose()
    shown = " ".join(run("contacts", "show", "u-1").split())  # undo the console's wrapping
    assert "was merged into" in shown
    assert "anonymous_id visitor-1" in shown
    assert "alias message m3" in shown
    assert "kept apart from contact" in shown


def test_serve_on_a_taken_port_says_so(env: dict[str, str]) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "cadenza", "serve", "--port", str(port)],
                                env=env, capture_output=True, text=True, timeout=60,
                                check=False)
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert f"CADENZA_PORT={port + 1}" in result.stderr
