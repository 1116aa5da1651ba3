"""Locales: a contact's locale picks a translation (fr-CA, then fr, then the default), each
translation is checked and laid out at save like the default."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cadenza.channels import Recipient, TemplateService, render_context
from cadenza.channels.render import locale_chain
from cadenza.clock import FakeClock
from cadenza.errors import ValidationFailed
from cadenza.store import Store
from tests.channels.servers import SmtpSink
from tests.channels.support import add_contact, add_outbox, make_dispatcher, smtp

__all__ = ["smtp"]
LOCALES = {
    "fr": {"subject": "Bonjour {{ contact.attributes.name }}", "body": "<p>Salut !</p>",
           "preheader": "Nouveautés"},
    "fr-CA": {"body": "<p>Allô !</p>"},
    "de": {"subject": "Hallo", "body": "<mjml><mj-body><mj-section><mj-column><mj-text>"
           "Guten Tag {{ contact.attributes.name }}</mj-text></mj-column></mj-section>"
           "</mj-body></mjml>"},
}


def save(service: TemplateService, fmt: str = "jinja") -> None:
    locales = LOCALES if fmt == "jinja" else {"de": LOCALES["de"]}
    body = "<p>Hello!</p>" if fmt == "jinja" else LOCALES["de"]["body"]
    service.save("hello", "email", "Hello {{ contact.attributes.name }}", body,
                 preheader="News", locales=locales, format=fmt)


def compose(service: TemplateService, locale: str | None) -> dict[str, Any]:
    contact = Recipient(1, email="a@example.com", attributes={"name": "Ana"}, locale=locale)
    return service.renderer.compose(template=service.get("hello"), params={}, text_fields=(),
                                    context=render_context(contact, {}, None, None),
                                    inline_name="hello")


@pytest.mark.parametrize(("locale", "subject", "body", "preheader"), [
    ("fr-CA", "Bonjour Ana", "Allô !", "Nouveautés"),  # its own body, fr's subject
    ("fr_ca", "Bonjour Ana", "Allô !", "Nouveautés"),
    ("fr-FR", "Bonjour Ana", "Salut !", "Nouveautés"),
    ("de-AT", "Hallo", "Guten Tag Ana", "News"),
    ("fr", "Bonjour Ana", "Salut !", "Nouveautés"),
    ("FR", "Bonjour Ana", "Salut !", "Nouveautés"),
    ("en-GB", "Hello Ana", "Hello!", "News"),
    (None, "Hello Ana", "Hello!", "News"),
    ("", "Hello Ana", "Hello!", "News"),
])
def test_the_contact_locale_picks_the_best_translation(store: Store, clock: FakeClock,
                                                       locale: str | None, subject: str,
                                                       body: str,
                                                       preheader: str | None) -> None:
    service = TemplateService(store, clock)
    save(service)
    content = compose(service, locale)
    assert body in content["body"]
    assert content["subject"] == subject
    assert content["preheader"] == preheader


def test_each_translation_is_laid_out_like_the_default(store: Store, clock: FakeClock) -> None:
    service = TemplateService(store, clock)
    save(service, "mjml")
    record = service.get("hello")
    assert record.locales is not None
    assert "<mj-" not in record.locales["de"]["compiled"]
    content = compose(service, "de-AT")
    assert "Guten Tag Ana" in content["body"]
    assert "<table" in content["body"]
    assert "Guten Tag Ana" in content["text"]
    assert content["subject"] == "Hallo"


@pytest.mark.parametrize(("locales", "field"), [
    ({"fr": {"body": "{{ oops"}}, "template"),
    ({"fr": {"subject": "{% if %}", "body": "x"}}, "template"),
    ({"fr": {"body": ""}}, "locales.fr.body"),
    ({"fr": {"subject": "only a subject"}}, "locales.fr.body"),
    ({"français": {"body": "x"}}, "locales.français"),
    ({"fr": {"body": "x", "footer": "y"}}, "locales.fr.footer"),
    ({"fr": {"body": "x"}, "FR": {"body": "y"}}, "locales.FR"),
    ({"fr": {"body": 3}}, "locales.fr.body"),
])
def test_translations_are_validated_at_save(store: Store, clock: FakeClock,
                                            locales: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        TemplateService(store, clock).save("t", "email", "S", "<p>x</p>", locales=locales)
    assert caught.value.field == field, caught.value.message


def test_preview_can_choose_a_locale(store: Store, clock: FakeClock) -> None:
    service = TemplateService(store, clock)
    save(service)
    contact = add_contact(store, clock.now_ms(), email="a@example.com",
                          attributes={"name": "Ana"})
    assert service.preview("hello", contact)["locale"] is None
    shown = service.preview("hello", contact, locale="fr")
    assert shown["locale"] == "fr"
    assert shown["subject"] == "Bonjour Ana"
    with pytest.raises(ValidationFailed) as caught:
        service.preview("hello", contact, locale="not a locale")
    assert caught.value.field == "locale"


def test_the_dispatcher_sends_each_contact_its_translation(store: Store, clock: FakeClock,
                                                           smtp: SmtpSink) -> None:
    dispatcher = make_dispatcher(store, clock, smtp_port=smtp.port)
    save(dispatcher.templates)
    people = {"fr@example.com": "fr-BE", "ca@example.com": "fr-CA", "en@example.com": None}
    ids = []
    for address, locale in people.items():
        cid = add_contact(store, clock.now_ms(), email=address, attributes={"name": "Ana"})
        with store.begin() as conn:
            conn.exec_driver_sql("UPDATE contacts SET locale = "
                                 f"{'NULL' if locale is None else repr(locale)} "
                                 f"WHERE id = {cid}")
        ids.append(cid)
    add_outbox(store, clock.now_ms(), [{"contact_id": i, "channel": "email",
                                        "template": "hello"} for i in ids])

    async def run() -> None:
        try:
            await dispatcher.run_once(10)
        finally:
            await dispatcher.close()

    asyncio.run(run())
    subjects = {mail.rcpt: mail.subject for mail in smtp.mails}
    assert subjects == {"fr@example.com": "Bonjour Ana", "ca@example.com": "Bonjour Ana",
                        "en@example.com": "Hello Ana"}
    html = {m.rcpt: m.mime.get_body(("html",)) for m in smtp.mails}
    assert "Allô" in html["ca@example.com"].get_content()  # type: ignore[union-attr]


@given(st.lists(st.from_regex(r"[a-zA-Z0-9]{1,8}", fullmatch=True), min_size=1, max_size=4),
       st.sampled_from(["-", "_"]))
def test_the_locale_chain_goes_from_specific_to_general(parts: list[str], sep: str) -> None:
    chain = locale_chain(sep.join(parts))
    assert len(chain) == len(parts)
    assert chain[-1] == parts[0].lower()
    assert all(chain[n].startswith(chain[n + 1] + "-") for n in range(len(chain) - 1))
