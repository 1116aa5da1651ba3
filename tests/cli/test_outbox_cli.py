"""`cadenza outbox` and `cadenza templates`, through typer's runner."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from typer.testing import CliRunner

from cadenza.cli import app
from cadenza.clock import SystemClock
from cadenza.store import Store, schema
from tests.channels.support import add_contact, add_outbox


def run(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result.output


def test_templates_and_dispatch_once(env: dict[str, str], store: Store, tmp_path: Path) -> None:
    body = tmp_path / "body.txt"
    body.write_text("Hello {{ contact.attributes.name }}")
    assert "Created" in run("templates", "save", "hello", "--channel", "log",
                            "--subject", "Hi", "--body-file", str(body))
    assert "Updated" in run("templates", "save", "hello", "--channel", "log",
                            "--body-file", str(body))
    assert "hello" in run("templates", "list")
    now = SystemClock().now_ms()
    contact = add_contact(store, now, attributes={"name": "Kim"})
    assert "Hello Kim" in run("templates", "render", "hello", "--contact", str(contact))
    rows = add_outbox(store, now, [{"contact_id": contact, "channel": "log",
                                    "template": "hello"},
                                   {"contact_id": contact, "channel": "nope"}])
    assert "1 sent" in run("outbox", "dispatch", "--once")
    assert "sent" in run("outbox", "list", "--status", "sent")
    dead = run("outbox", "dead")
    assert str(rows[1]) in dead
    assert '"status": "dead"' in run("outbox", "show", str(rows[1]))
    assert "Replayed" in run("outbox", "replay", str(rows[1]))
    assert "not dead: unchanged" in run("outbox", "replay", str(rows[1]), str(rows[0]))
    with store.read() as conn:
        assert conn.execute(sa.select(schema.outbox.c.status)
                            .where(schema.outbox.c.id == rows[1])).scalar() == "pending"


def test_bad_input_is_one_clear_line(env: dict[str, str]) -> None:
    from cadenza.cli import main  # noqa: F401  (main turns errors into one line)

    result = CliRunner().invoke(app, ["outbox", "list", "--status", "lost"])
    assert result.exit_code != 0
    assert "not an outbox status" in str(result.exception)
