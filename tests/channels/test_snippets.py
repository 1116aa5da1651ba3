"""Snippets: `{% include "key" %}` from the store, checked at save, cached without a query per
message, refreshed when changed."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from cadenza.channels import Recipient, RenderFailed, TemplateService, render_context
from cadenza.channels.render import Renderer
from cadenza.channels.snippets import SnippetCache
from cadenza.clock import FakeClock
from cadenza.errors import Conflict, NotFound, ValidationFailed
from cadenza.store import Store
from tests.channels.servers import SmtpSink
from tests.channels.support import add_contact, add_outbox, make_dispatcher, outbox_rows, smtp

__all__ = ["smtp"]
ADA = Recipient(1, email="ada@example.com", attributes={"name": "Ada"})
FOOTER = '<p>Bye {{ contact.attributes.name }}. <a href="{{ unsubscribe_url }}">Stop</a></p>'


def context() -> dict[str, Any]:
    return render_context(ADA, {}, "j", "s", {"unsubscribe": "https://x.example/u/1"})


def compose(service: TemplateService, key: str) -> dict[str, Any]:
    return service.renderer.compose(template=service.get(key), params={}, text_fields=(),
                                    context=context(), inline_name=key)


def test_include_renders_the_snippet_in_html_and_as_text(store: Store,
                                                         clock: FakeClock) -> None:
    service = TemplateService(store, clock)
    service.snippets.save("footer", FOOTER)
    service.save("hello", "email", "Hi", '<p>Hello</p>{% include "footer" %}')
    content = compose(service, "hello")
    assert content["body"] == ('<p>Hello</p><p>Bye Ada. <a href="https://x.example/u/1">Stop'
                               "</a></p>")
    assert "Bye Ada. [Stop](https://x.example/u/1)" in content["text"]
    assert "<p>" not in content["text"]


def test_a_snippet_change_shows_in_the_next_render(store: Store, clock: FakeClock) -> None:
    service = TemplateService(store, clock)
    service.snippets.save("sig", "-- Ada")
    service.save("note", "email", "Hi", 'Note {% include "sig" %}')
    assert compose(service, "note")["body"] == "Note -- Ada"
    service.snippets.save("sig", "-- Bo")
    assert compose(service, "note")["body"] == "Note -- Bo"


def test_another_process_sees_a_change_after_the_check_interval(store: Store,
                                                                clock: FakeClock) -> None:
    writer = TemplateService(store, clock)
    writer.snippets.save("sig", "-- one")
    writer.save("note", "email", "Hi", 'Note {% include "sig" %}')
    cache = SnippetCache(store, check_interval_s=3600)
    reader = TemplateService(store, clock, Renderer(snippets=cache))
    assert compose(reader, "note")["body"] == "Note -- one"
    clock.advance(1000)
    writer.snippets.save("sig", "-- two")
    assert compose(reader, "note")["body"] == "Note -- one"  # within the interval
    cache.check_interval_s = 0
    assert compose(reader, "note")["body"] == "Note -- two"


@pytest.mark.parametrize(("body", "field", "reason"), [
    ('{% include "nope" %}', "body", "'nope', which does not exist"),
    ("{% include name %}", "body", "computed name"),
])
def test_unknown_or_computed_includes_are_refused_at_save(store: Store, clock: FakeClock,
                                                          body: str, field: str,
                                                          reason: str) -> None:
    service = TemplateService(store, clock)
    with pytest.raises(ValidationFailed, match=reason) as caught:
        service.save("t", "email", "S", body)
    assert caught.value.field == field
    with pytest.raises(ValidationFailed, match=reason):
        service.snippets.save("s", body)


def test_unknown_includes_are_refused_in_every_field_and_locale(store: Store,
                                                               clock: FakeClock) -> None:
    service = TemplateService(store, clock)
    with pytest.raises(ValidationFailed) as caught:
        service.save("t", "email", '{% include "x" %}', "Body")
    assert caught.value.field == "subject"
    with pytest.raises(ValidationFailed) as caught:
        service.save("t", "email", "S", "Body", locales={"fr": {"body": '{% include "x" %}'}})
    assert caught.value.field == "locales.fr.body"


def test_snippets_cannot_include_themselves(store: Store, clock: FakeClock) -> None:
    service = TemplateService(store, clock)
    with pytest.raises(ValidationFailed, match="includes itself"):
        service.snippets.save("loop", 'x {% include "loop" %}')
    service.snippets.save("a", "a")
    service.snippets.save("b", 'b {% include "a" %}')
    with pytest.raises(ValidationFailed, match=r"a -> b -> a"):
        service.snippets.save("a", 'a {% include "b" %}')


def test_delete_is_refused_while_included(store: Store, clock: FakeClock) -> None:
    service = TemplateService(store, clock)
    service.snippets.save("footer", FOOTER)
    service.save("hello", "email", "Hi", '<p>x</p>{% include "footer" %}')
    with pytest.raises(Conflict, match="template hello"):
        service.snippets.delete("footer")
    service.save("hello", "email", "Hi", "<p>x</p>")
    service.snippets.delete("footer")
    with pytest.raises(NotFound):
        service.snippets.get("footer")
    with pytest.raises(NotFound):
        service.snippets.delete("footer")


def test_a_snippet_deleted_elsewhere_fails_the_render_clearly(store: Store,
                                                              clock: FakeClock) -> None:
    service = TemplateService(store, clock)
    service.snippets.save("gone", "x")
    service.save("t", "email", "S", 'A {% include "gone" %}')
    with store.begin() as conn:
        conn.execute(sa.text("DELETE FROM template_snippets"))
    service.snippets.cache.refresh(force=True)
    with pytest.raises(RenderFailed, match="snippet 'gone', which does not exist"):
        compose(service, "t")


@pytest.fixture
def statements(store: Store) -> Iterator[list[str]]:
    """Every SQL statement the store runs while the test runs."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    sa.event.listen(store.engine, "before_cursor_execute", record)
    yield seen
    sa.event.remove(store.engine, "before_cursor_execute", record)


def test_a_dispatch_batch_reads_snippets_once_not_per_message(
        store: Store, clock: FakeClock, smtp: SmtpSink, statements: list[str]) -> None:
    dispatcher = make_dispatcher(store, clock, smtp_port=smtp.port)
    dispatcher.templates.snippets.save("footer", FOOTER)
    dispatcher.templates.save("hello", "email", "Hi {{ contact.attributes.name }}",
                              '<p>Hello</p>{% include "footer" %}')
    ids = [add_contact(store, clock.now_ms(), email=f"c{n}@example.com",
                       attributes={"name": f"N{n}"}) for n in range(20)]
    add_outbox(store, clock.now_ms(), [{"contact_id": i, "channel": "email",
                                        "template": "hello"} for i in ids])
    statements.clear()
    dispatcher.templates.snippets.cache.expire()  # due on the first message

    async def run() -> int:
        try:
            return (await dispatcher.run_once(100)).sent
        finally:
            await dispatcher.close()

    assert asyncio.run(run()) == 20
    snippet_reads = [s for s in statements if "template_snippets" in s]
    assert len(snippet_reads) == 1  # one freshness check for the batch, not one per message
    bodies = {mail.rcpt: mail.mime for mail in smtp.mails}
    assert len(bodies) == 20
    html = bodies["c3@example.com"].get_body(("html",))
    assert html is not None
    assert "Bye N3." in html.get_content()
    assert all(row["status"] == "sent" for row in outbox_rows(store).values())


def test_the_cli_saves_snippets_and_mjml_templates_with_locales(
        store_url: str, store: Store, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from cadenza.cli.main import app

    monkeypatch.setenv("CADENZA_DATABASE_URL", store_url)
    monkeypatch.setenv("CADENZA_SECRET_KEY", "k" * 40)
    (tmp_path / "footer.html").write_text(FOOTER)
    (tmp_path / "hello.mjml").write_text(
        "<mjml><mj-body><mj-section><mj-column><mj-text>Hi {{ contact.attributes.name }}"
        '</mj-text><mj-text>{% include "footer" %}</mj-text></mj-column></mj-section>'
        "</mj-body></mjml>")
    (tmp_path / "locales.yaml").write_text(  # a translation's body has the template's format
        "fr:\n  subject: Salut\n  body: <mjml><mj-body><mj-text>Salut</mj-text></mj-body>"
        "</mjml>\n")
    runner = CliRunner()

    def run(*args: str) -> str:
        result = runner.invoke(app, list(args), catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    assert "Created" in run("snippets", "save", "footer", "--body-file",
                            str(tmp_path / "footer.html"))
    assert "footer" in run("snippets", "list")
    saved = run("templates", "save", "hello", "--body-file", str(tmp_path / "hello.mjml"),
                "--subject", "Hi", "--locales-file", str(tmp_path / "locales.yaml"))
    assert "mjml" in saved
    assert "locales fr" in saved
    record = TemplateService(store, FakeClock()).get("hello")
    assert record.format == "mjml"
    assert record.locales is not None
    assert record.locales["fr"]["subject"] == "Salut"
    refused = runner.invoke(app, ["snippets", "delete", "footer"])
    assert isinstance(refused.exception, Conflict)
    assert "Deleted" in run("templates", "delete", "hello")
    assert "Deleted" in run("snippets", "delete", "footer")
