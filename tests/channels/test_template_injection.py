"""A corpus of template-injection payloads through preview, test send and real send (an
outbox row dispatched to a real SMTP server): each is refused at save, fails its render with
a clear error, or renders inert; nothing ever shows settings, the environment or Python
internals. Hostile contact data is never evaluated and is escaped in HTML; CR/LF in a
subject never makes a header."""

from __future__ import annotations

import asyncio
import os
import re
from typing import Any

import pytest

from cadenza.channels import RenderFailed
from cadenza.channels.render import Renderer
from cadenza.channels.snippets import SnippetCache
from cadenza.channels.templates import TemplateService
from cadenza.channels.testsend import TestSendService
from cadenza.clock import FakeClock
from cadenza.engine.dispatch import Dispatcher
from cadenza.errors import ValidationFailed
from cadenza.settings import Settings
from cadenza.store import Store
from tests.api.conftest import SECRET
from tests.channels.servers import SmtpSink
from tests.channels.support import add_contact, add_outbox, make_dispatcher, outbox_rows, smtp

__all__ = ["smtp"]
CANARY = "canary-value-5b1f0e"

SOURCE_PAYLOADS = [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ config }}",
    "{{ config.items() }}",
    "{{ settings.secret_key }}",
    "{{ self._TemplateReference__context }}",
    "{{ self.__init__.__globals__ }}",
    "{{ cycler.__init__.__globals__.os.environ }}",
    "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "{{ joiner.__init__.__globals__ }}",
    "{{ namespace.__init__.__globals__ }}",
    "{{ range.__globals__ }}",
    "{{ dict.__base__.__subclasses__() }}",
    "{{ request.application.__globals__.__builtins__ }}",
    "{% import os %}",
    "{% import 'os' as os %}{{ os.environ }}",
    "{% from 'os' import environ %}{{ environ }}",
    "{% extends 'base' %}",
    "{{ '{0.__class__.__init__.__globals__}'.format(contact) }}",
    "{{ '{0[attributes].__class__}'.format(contact) }}",
    "{{ '%s' % contact.__class__ }}",
    "{{ contact.attributes|attr('__class__') }}",
    "{{ contact.attributes.update({'x': 1}) }}",
    "{{ (contact.attributes.items()|list).__class__.__base__ }}",
    "{{ 'x' * 999999999 }}",
    "{{ '{:>999999999}'.format(1) }}",
    "{{ '%999999999d' % 1 }}",
    "{{ 'x'|center(999999999) }}",
    "{{ range(99999)|join('x' * 500000) }}",
    "{{ 9 ** 99999999 }}",
    "{% for a in range(99999) %}{% for b in range(99999) %}{% endfor %}{% endfor %}",
    "{% for a in range(99999) %}{% for b in range(99999) %}x{% endfor %}{% endfor %}",
    "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
    "{% macro f(s) %}{{ f(s ~ s) }}{% endmacro %}{{ f('x') }}",
    "{{ contact.attributes.x }}{{ contact.attributes.x|safe }}",
]


def leaked(text: str) -> list[str]:
    """What in `text` shows settings, the environment or Python internals."""
    found = [needle for needle in (CANARY, SECRET, "<class", "<module", "<function",
                                   "<built-in", "__builtins__", "os.environ") if needle in text]
    path = os.environ.get("PATH")
    if path and path in text:
        found.append("PATH")
    return found


@pytest.fixture(autouse=True)
def canary(monkeypatch: pytest.MonkeyPatch) -> None:
    """A secret in the environment that no template may ever show."""
    monkeypatch.setenv("CADENZA_CANARY", CANARY)


def fast(store: Store, clock: FakeClock) -> TemplateService:
    """Templates with a 200 ms render limit (the runaway loops stop quickly)."""
    return TemplateService(store, clock, Renderer(timeout_ms=200, snippets=SnippetCache(store)))


def save_all(service: TemplateService) -> dict[str, str]:
    """Save each payload as the body (in HTML) of template p<n>; the keys saved (the others
    were refused at save, as they should be) with their payloads."""
    saved = {}
    errors = []
    for n, payload in enumerate(SOURCE_PAYLOADS):
        try:
            service.save(f"p{n}", "email", "Subject " + payload, f"<p>{payload}</p>")
        except ValidationFailed as exc:
            errors.append(exc.message)
            continue
        saved[f"p{n}"] = payload
    assert [m for m in errors if leaked(m)] == []
    return saved


def hostile_contact(store: Store, clock: FakeClock, email: str = "ann@example.com") -> int:
    return add_contact(store, clock.now_ms(), email=email, attributes={
        "x": "{{7*7}}<script>alert(1)</script>{% include 'x' %}{{ config }}"})


def test_refused_at_save(store: Store, clock: FakeClock) -> None:
    saved = save_all(fast(store, clock))
    refused = {p for p in SOURCE_PAYLOADS if p not in saved.values()}
    assert {"{% import os %}", "{% import 'os' as os %}{{ os.environ }}",
            "{% extends 'base' %}"} <= refused


def test_through_preview(store: Store, clock: FakeClock) -> None:
    service = fast(store, clock)
    saved = save_all(service)
    contact = hostile_contact(store, clock)
    rendered, errors = [], []
    for key in saved:
        try:
            rendered.append(str(service.preview(key, contact, {"note": "{{ config }}"})))
        except RenderFailed as exc:
            errors.append(exc.message)
    assert [m for m in errors + rendered if leaked(m)] == []
    assert len(rendered) >= 1  # the data payload renders (inert)
    assert len(errors) >= 10


def test_through_test_send(store: Store, clock: FakeClock, smtp: SmtpSink) -> None:
    settings = Settings.load(database_url="sqlite://", secret_key=SECRET, smtp_host="127.0.0.1",
                             smtp_port=smtp.port, test_send_domains="example.com")
    service = fast(store, clock)
    saved = save_all(service)
    tests = TestSendService.from_settings(store, clock, settings, service)
    tests.add("qa@example.com")
    token = re.search(r"Verification token: (\S+)",
                      smtp.mails[-1].mime.get_body(("plain",)).get_content())  # type: ignore[union-attr]
    assert token is not None
    tests.verify("qa@example.com", token.group(1))
    contact = hostile_contact(store, clock)
    errors = []
    for key in saved:
        try:
            tests.send(key, "qa@example.com", contact)
        except RenderFailed as exc:
            errors.append(exc.message)
    assert [m for m in errors if leaked(m)] == []
    assert len(smtp.mails) >= 2
    for mail in smtp.mails:
        assert not leaked(mail.mime.as_string()), mail.subject


def dispatch(dispatcher: Dispatcher) -> None:
    async def run() -> None:
        try:
            while (await dispatcher.run_once(100)).claimed:
                pass
        finally:
            await dispatcher.close()

    asyncio.run(run())


def test_through_real_send(store: Store, clock: FakeClock, smtp: SmtpSink) -> None:
    dispatcher = make_dispatcher(store, clock, smtp_port=smtp.port)
    dispatcher.templates = fast(store, clock)
    saved = save_all(dispatcher.templates)
    contact = hostile_contact(store, clock)
    add_outbox(store, clock.now_ms(), [{"contact_id": contact, "channel": "email",
                                        "template": key, "step": key} for key in saved])
    dispatch(dispatcher)
    rows = outbox_rows(store).values()
    assert {row["status"] for row in rows} <= {"sent", "dead"}
    for row in rows:
        assert not leaked(str(row["last_error"] or "")), row["last_error"]
        assert not leaked(str(row["rendered"] or "")), row["rendered"]
        if row["status"] == "dead":
            assert row["last_error"].startswith("template ")
    for mail in smtp.mails:
        assert not leaked(mail.mime.as_string()), mail.subject
    assert any(row["status"] == "sent" for row in rows)


def test_hostile_data_is_never_evaluated_and_is_escaped_in_html(store: Store,
                                                                 clock: FakeClock,
                                                                 smtp: SmtpSink) -> None:
    dispatcher = make_dispatcher(store, clock, smtp_port=smtp.port)
    dispatcher.templates.save("data", "email", "Hi {{ contact.attributes.x }}",
                              "<p>{{ contact.attributes.x }}</p>")
    contact = hostile_contact(store, clock)
    preview = dispatcher.templates.preview("data", contact)
    add_outbox(store, clock.now_ms(), [{"contact_id": contact, "channel": "email",
                                        "template": "data"}])
    dispatch(dispatcher)
    html_part = smtp.mails[0].mime.get_body(("html",))
    assert html_part is not None
    for body in (str(preview["body"]), html_part.get_content()):
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
        assert "<script>" not in body
        assert "{{7*7}}" in body
        assert "49" not in body
        assert "{{ config }}" in body
    assert smtp.mails[0].subject.startswith("Hi {{7*7}}<script>")  # text, not evaluated


@pytest.mark.parametrize("name", [
    "Bob\r\nBcc: victim@evil.example\r\nX-Injected: yes",
    "Bob\nX-Injected: yes",
    "Bob\rX-Injected: yes",
    "Bob\r\n\r\n<html>body injection</html>",
    "Bob\u2028X-Injected: yes",
])
def test_line_breaks_in_a_subject_never_make_a_header(store: Store, clock: FakeClock,
                                                      smtp: SmtpSink, name: str) -> None:
    dispatcher = make_dispatcher(store, clock, smtp_port=smtp.port)
    dispatcher.templates.save("hi", "email", "Hi {{ contact.attributes.name }}", "<p>x</p>")
    contact = add_contact(store, clock.now_ms(), email="bob@example.com",
                          attributes={"name": name})
    add_outbox(store, clock.now_ms(), [{"contact_id": contact, "channel": "email",
                                        "template": "hi", "params": {}}])
    dispatch(dispatcher)
    assert [m.rcpt for m in smtp.mails] == ["bob@example.com"]
    mime = smtp.mails[0].mime
    assert mime["X-Injected"] is None
    assert mime["Bcc"] is None
    assert "\n" not in str(mime["Subject"])
    assert "\r" not in str(mime["Subject"])
    assert str(mime["Subject"]).startswith("Hi Bob")
    assert "body injection" not in (mime.get_body(("html",)) or mime).get_content()


def test_a_runaway_template_stops_at_the_time_limit(store: Store, clock: FakeClock) -> None:
    import time

    renderer = Renderer(timeout_ms=100)
    context: dict[str, Any] = {"contact": {}, "entry": {}}
    for source in SOURCE_PAYLOADS[-5:-3]:
        started = time.monotonic()
        with pytest.raises(RenderFailed, match=r"longer than 100 ms|over"):
            renderer.render(source, context, name="loop")
        assert time.monotonic() - started < 2.0
