"""Unsubscribe and the preference centre over consents and topics; a queued message to a
contact who unsubscribed is not sent."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa

from cadenza.channels.links import MessageRef
from cadenza.channels.tokens import TokenClaims, TokenInvalid, TokenKind, TokenSigner
from cadenza.channels.tracking import TrackingLinks, TrackingOptions
from cadenza.channels.unsubscribe import TopicService, UnsubscribeService, mask_address
from cadenza.clock import FakeClock
from cadenza.engine.dispatch import DispatchReport
from cadenza.errors import NotFound, ValidationFailed
from cadenza.store import Store, schema
from tests.channels.servers import SmtpSink
from tests.channels.support import add_contact, add_outbox, make_dispatcher, outbox_rows, smtp

__all__ = ["smtp"]

SECRET = "unsubscribe-test-secret-0123456789-0123456789"
SIGNER = TokenSigner(SECRET)
LINKS = TrackingLinks(SIGNER, TrackingOptions(public_url="https://mail.example.org"))


def token(contact: int, kind: TokenKind = TokenKind.UNSUBSCRIBE, *, purpose: str = "news",
          shadow: bool = False, outbox_id: int = 1) -> str:
    return SIGNER.sign(TokenClaims(kind, outbox_id, contact, "email", purpose, shadow))


def consents(store: Store, contact: int) -> dict[str, tuple[str, str]]:
    c = schema.consents
    with store.read() as conn:
        return {r.purpose: (r.status, r.source) for r in conn.execute(
            sa.select(c.c.purpose, c.c.status, c.c.source).where(c.c.contact_id == contact))}


def history(store: Store, contact: int) -> list[tuple[str, str, str | None]]:
    h = schema.consent_history
    with store.read() as conn:
        return [tuple(r) for r in conn.execute(sa.select(h.c.purpose, h.c.status, h.c.ip)
                                               .where(h.c.contact_id == contact)
                                               .order_by(h.c.id))]


def events(store: Store) -> list[tuple[str, dict[str, object]]]:
    e = schema.events
    with store.read() as conn:
        return [(r.name, r.properties) for r in conn.execute(
            sa.select(e.c.name, e.c.properties).order_by(e.c.id))]


@pytest.fixture
def service(store: Store, clock: FakeClock) -> UnsubscribeService:
    return UnsubscribeService(store, clock, SIGNER, "https://mail.example.org")


def test_view_changes_nothing_and_unsubscribe_is_idempotent(
        store: Store, clock: FakeClock, service: UnsubscribeService) -> None:
    contact = add_contact(store, clock.now_ms(), email="ann@example.com")
    view = service.view(token(contact))
    assert (view.address, view.purpose, view.unsubscribed) == ("a•••@example.com", "news",
                                                               False)
    assert view.preferences_url
    assert "/preferences/" in view.preferences_url
    assert consents(store, contact) == {}
    assert events(store) == []
    assert service.unsubscribe(token(contact), "203.0.113.9", one_click=True)
    assert not service.unsubscribe(token(contact), "203.0.113.9")
    assert consents(store, contact) == {"news": ("opted_out", "unsubscribe")}
    assert history(store, contact) == [("news", "opted_out", "203.0.113.9")]
    [(name, props)] = events(store)
    assert name == "email.unsubscribed"
    assert props["one_click"] is True
    assert service.view(token(contact)).unsubscribed


def test_transactional_links_opt_out_of_marketing(store: Store, clock: FakeClock,
                                                  service: UnsubscribeService) -> None:
    contact = add_contact(store, clock.now_ms(), email="bo@example.com")
    service.unsubscribe(token(contact, purpose="transactional"), None)
    assert consents(store, contact) == {"marketing": ("opted_out", "unsubscribe")}


def test_shadow_and_forged_tokens_change_nothing(store: Store, clock: FakeClock,
                                                 service: UnsubscribeService) -> None:
    contact = add_contact(store, clock.now_ms(), email="cy@example.com")
    assert not service.unsubscribe(token(contact, shadow=True), None)
    genuine = token(contact)
    for forged in (genuine[:-1] + ("A" if genuine[-1] != "A" else "B"), genuine[:-5],
                   token(contact, TokenKind.OPEN), token(contact, TokenKind.PREFERENCES),
                   TokenSigner("another-installation-secret-0123456789").sign(
                       TokenClaims(TokenKind.UNSUBSCRIBE, 1, contact, "email", "news"))):
        with pytest.raises(TokenInvalid):
            service.unsubscribe(forged, None)
    with pytest.raises(TokenInvalid):
        service.unsubscribe(token(contact + 999), None)  # no such contact
    assert consents(store, contact) == {}
    assert events(store) == []


def test_merged_contacts_are_followed(store: Store, clock: FakeClock,
                                      service: UnsubscribeService) -> None:
    survivor = add_contact(store, clock.now_ms(), email="dee@example.com")
    merged = add_contact(store, clock.now_ms())
    c = schema.contacts
    with store.begin() as conn:
        conn.execute(sa.update(c).where(c.c.id == merged).values(merged_into=survivor))
    service.unsubscribe(token(merged), None)
    assert consents(store, survivor) == {"news": ("opted_out", "unsubscribe")}


def test_topics_admin(store: Store, clock: FakeClock) -> None:
    topics = TopicService(store, clock)
    assert topics.add("news", "Newsletter")[1] is True
    topic, created = topics.add("news", "Monthly newsletter", "Once a month")
    assert not created
    assert topic.name == "Monthly newsletter"
    topics.add("sms-deals", "Deals", channel="sms")
    assert [t.key for t in topics.all()] == ["news", "sms-deals"]
    assert [t.key for t in topics.all("email")] == ["news"]
    for bad, field in ((("News!", "x"), "key"), (("marketing", "x"), "key"),
                       (("ok", " "), "name")):
        with pytest.raises(ValidationFailed) as caught:
            topics.add(*bad)
        assert caught.value.field == field
    with pytest.raises(ValidationFailed, match="did you mean 'email'"):
        topics.add("ok", "Ok", channel="emial")
    topics.remove("sms-deals")
    with pytest.raises(NotFound):
        topics.remove("sms-deals")


def test_preference_centre(store: Store, clock: FakeClock,
                           service: UnsubscribeService) -> None:
    topics = TopicService(store, clock)
    topics.add("news", "Newsletter")
    topics.add("offers", "Offers")
    contact = add_contact(store, clock.now_ms(), email="eve@example.com")
    prefs_token = token(contact, TokenKind.PREFERENCES)
    with pytest.raises(TokenInvalid):
        service.preferences(token(contact))  # an unsubscribe token is not a preferences one
    prefs = service.preferences(prefs_token)
    # The workspace's consent mode is opt_out: with no rows, every topic reaches her.
    assert [(c.topic.key, c.subscribed) for c in prefs.choices] == [("news", True),
                                                                    ("offers", True)]
    # Submitting the form unchanged writes nothing.
    service.update(prefs_token, {"news", "offers"}, False, "198.51.100.1")
    assert consents(store, contact) == {}
    prefs = service.update(prefs_token, {"news"}, False, "198.51.100.1")
    assert consents(store, contact) == {"offers": ("opted_out", "preference_center")}
    assert [c.subscribed for c in prefs.choices] == [True, False]
    with pytest.raises(ValidationFailed, match="'nope' is not a topic"):
        service.update(prefs_token, {"nope"}, False, None)
    prefs = service.update(prefs_token, {"news"}, True, None)
    assert prefs.marketing_off
    assert not any(c.subscribed for c in prefs.choices)
    assert consents(store, contact)["marketing"] == ("opted_out", "preference_center")
    prefs = service.update(prefs_token, {"offers"}, False, None)
    assert not prefs.marketing_off
    assert [c.subscribed for c in prefs.choices] == [False, True]
    names = [name for name, _ in events(store)]
    assert names.count("email.unsubscribed") == 1
    assert names.count("email.preferences_changed") == 3


def test_mask_address() -> None:
    assert mask_address("ann@example.com") == "a•••@example.com"
    assert mask_address(None) == ""
    assert mask_address("+4930") == "+4•••"


def test_a_queued_email_is_not_sent_after_unsubscribe(store: Store, clock: FakeClock,
                                                      smtp: SmtpSink,
                                                      service: UnsubscribeService) -> None:
    ann = add_contact(store, clock.now_ms(), email="ann@example.com")
    bo = add_contact(store, clock.now_ms(), email="bo@example.com")
    queued = add_outbox(store, clock.now_ms(), [
        {"contact_id": contact, "channel": "email",
         "params": {"subject": "Sale", "body": "Everything must go"}} for contact in (ann, bo)])
    # Ann follows the unsubscribe link of an earlier marketing email.
    link = LINKS.links(MessageRef(999, ann, "email", "marketing"))["one_click"]
    service.unsubscribe(link.rsplit("/", 1)[1], None, one_click=True)
    dispatcher = make_dispatcher(store, clock, smtp_port=smtp.port)  # default interceptors

    async def dispatch() -> DispatchReport:
        try:
            return await dispatcher.run_once()
        finally:
            await dispatcher.close()

    report = asyncio.run(dispatch())
    assert (report.sent, report.cancelled) == (1, 1)
    rows = outbox_rows(store)
    assert rows[queued[0]]["status"] == "cancelled"
    assert "opted out" in rows[queued[0]]["last_error"]
    assert rows[queued[1]]["status"] == "sent"
    assert [m.rcpt for m in smtp.mails] == ["bo@example.com"]
