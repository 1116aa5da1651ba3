"""The public feedback routes and the provider hooks over HTTP, against a real server on
loopback: pixel, redirects, unsubscribe (page, form, RFC 8058 one-click), the preference
centre, SendGrid/Postmark/DSN hooks and the topics admin."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import httpx
import orjson
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from cadenza.api import create_app
from cadenza.channels.email import message_id
from cadenza.channels.links import MessageRef
from cadenza.channels.tracking import TrackingLinks, link_builder_from_settings
from cadenza.clock import FakeClock
from cadenza.governance import KeyKind, create_key
from cadenza.settings import Settings
from cadenza.store import Store, schema
from tests.api.support import serving_app
from tests.channels.support import add_contact, add_outbox
from tests.channels.test_bounces import postfix_dsn

SECRET = "feedback-api-secret-0123456789-0123456789-ab"
PUBLIC = "https://mail.example.org"
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36"
SG_PRIVATE = ec.generate_private_key(ec.SECP256R1())
SG_PUBLIC = base64.b64encode(SG_PRIVATE.public_key().public_bytes(
    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()


@pytest.fixture
def app_settings(store_url: str) -> Settings:
    return Settings.load(database_url=store_url, secret_key=SECRET, key_cache_seconds=0,
                         engine=False, public_url=PUBLIC, sendgrid_webhook_public_key=SG_PUBLIC,
                         postmark_webhook_username="pm", postmark_webhook_password="pm-pass",
                         dsn_secret="dsn-secret-value")


@pytest.fixture
def client(app_settings: Settings, store: Store, clock: FakeClock) -> Iterator[httpx.Client]:
    """A client of a real uvicorn server on loopback running the app."""
    with serving_app(create_app(app_settings, store=store, clock=clock)) as url, \
            httpx.Client(base_url=url, timeout=10, headers={"User-Agent": BROWSER}) as http:
        yield http


@pytest.fixture
def links(app_settings: Settings) -> TrackingLinks:
    built = link_builder_from_settings(app_settings)
    assert isinstance(built, TrackingLinks)
    return built


def path(url: str) -> str:
    assert url.startswith(PUBLIC)
    return url.removeprefix(PUBLIC)


def sent_email(store: Store, clock: FakeClock, email: str = "ann@example.com",
               key: str = "k1", *, shadow: bool = False) -> MessageRef:
    contact = add_contact(store, clock.now_ms(), email=email)
    [row] = add_outbox(store, clock.now_ms(), [{"contact_id": contact, "channel": "email",
                                                 "key": key, "shadow": shadow}])
    o = schema.outbox
    with store.begin() as conn:
        conn.execute(sa.update(o).where(o.c.id == row).values(
            status="shadowed" if shadow else "sent", sent_at=clock.now_ms(),
            provider_ref=message_id(key), purpose="marketing"))
    return MessageRef(row, contact, "email", "marketing", shadow)


def events(store: Store) -> list[tuple[str, dict[str, object]]]:
    e = schema.events
    with store.read() as conn:
        return [(r.name, r.properties) for r in conn.execute(
            sa.select(e.c.name, e.c.properties).order_by(e.c.id))]


def consents(store: Store) -> list[tuple[int, str, str, str]]:
    c = schema.consents
    with store.read() as conn:
        return [tuple(r) for r in conn.execute(sa.select(
            c.c.contact_id, c.c.purpose, c.c.status, c.c.source).order_by(c.c.purpose))]


def test_open_pixel(client: httpx.Client, store: Store, clock: FakeClock,
                    links: TrackingLinks) -> None:
    ref = sent_email(store, clock)
    clock.advance(3_600_000)
    url = path(links.open_url(ref))
    answer = client.get(url)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "image/gif"
    assert answer.content.startswith(b"GIF89a")
    assert "no-store" in answer.headers["cache-control"]
    clock.advance(1000)
    client.get(url, headers={"User-Agent": "Mozilla/5.0"})  # Apple Mail Privacy Protection
    assert client.get("/t/o/not-a-token").status_code == 200  # still a pixel
    assert client.get(url[:-2] + "xx").content.startswith(b"GIF")
    found = events(store)
    assert [(n, p["machine"]) for n, p in found] == [("email.opened", False),
                                                     ("email.opened", True)]


def test_click_redirects_only_to_the_signed_url(client: httpx.Client, store: Store,
                                                clock: FakeClock, links: TrackingLinks) -> None:
    ref = sent_email(store, clock)
    url = path(links.click_url(ref, "https://shop.example/p?x=1&y=2"))
    head = client.head(url)  # a scanner checks the link right away
    assert head.status_code == 302
    clock.advance(60_000)
    answer = client.get(url)
    assert answer.status_code == 302
    assert answer.headers["location"] == "https://shop.example/p?x=1&y=2"
    for bad in (url[:-1] + ("A" if url[-1] != "A" else "B"), "/t/c/garbage",
                url.replace("/t/c/", "/t/c/x"), path(links.open_url(ref)).replace("/t/o/",
                                                                                  "/t/c/")):
        refused = client.get(bad)
        assert refused.status_code == 404
        assert "location" not in refused.headers
        assert "not valid" in refused.text
    assert [(n, p["bot"], p["bot_reason"]) for n, p in events(store)] == [
        ("email.clicked", True, "head"), ("email.clicked", False, None)]


def test_unsubscribe_page_form_and_one_click(client: httpx.Client, store: Store,
                                             clock: FakeClock, links: TrackingLinks) -> None:
    ref = sent_email(store, clock)
    url = path(links.links(ref)["unsubscribe"])
    page = client.get(url)
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    assert '<form method="post">' in page.text
    assert "a•••@example.com" in page.text
    assert page.headers["x-robots-tag"].startswith("noindex")
    assert consents(store) == []  # GET changes nothing
    one_click = client.post(path(links.links(ref)["one_click"]),
                            data={"List-Unsubscribe": "One-Click"})
    assert one_click.status_code == 200
    assert one_click.text == "unsubscribed\n"
    assert consents(store) == [(ref.contact_id, "marketing", "opted_out", "unsubscribe")]
    again = client.post(url, data={"confirm": "1"})
    assert again.status_code == 200
    assert "You are unsubscribed" in again.text
    assert [n for n, _ in events(store)] == ["email.unsubscribed"]
    assert "already unsubscribed" in client.get(url).text
    h = schema.consent_history
    with store.read() as conn:
        assert conn.execute(sa.select(h.c.ip)).scalar_one() == "127.0.0.1"


def test_bad_unsubscribe_tokens_change_nothing(client: httpx.Client, store: Store,
                                               clock: FakeClock, links: TrackingLinks) -> None:
    ref = sent_email(store, clock)
    good = path(links.links(ref)["unsubscribe"])
    prefs = path(links.links(ref)["preferences"])
    for bad in (good[:-3], good + "A", "/u/" + prefs.removeprefix("/preferences/"),
                "/u/" + "A" * 5000):
        assert client.get(bad).status_code in (404, 400)
        assert client.post(bad, data={"List-Unsubscribe": "One-Click"}).status_code in (404,
                                                                                        400)
    assert consents(store) == []
    assert events(store) == []


def test_shadow_unsubscribe_is_a_preview(client: httpx.Client, store: Store,
                                         clock: FakeClock, links: TrackingLinks) -> None:
    ref = sent_email(store, clock, shadow=True)
    url = path(links.links(ref)["unsubscribe"])
    assert "preview (shadow)" in client.get(url).text
    assert client.post(url, data={"confirm": "1"}).status_code == 200
    client.get(path(links.open_url(ref)))
    assert consents(store) == []
    assert events(store) == []


def test_preference_centre_over_http(client: httpx.Client, store: Store, clock: FakeClock,
                                     links: TrackingLinks) -> None:
    admin = _admin_key(store, clock)
    for key, name in (("news", "Newsletter <b>weekly</b>"), ("offers", "Offers")):
        answer = client.put(f"/api/topics/{key}", json={"name": name}, headers=admin)
        assert answer.status_code == 201
    ref = sent_email(store, clock)
    url = path(links.links(ref)["preferences"])
    page = client.get(url)
    assert page.status_code == 200
    assert "Newsletter &lt;b&gt;weekly&lt;/b&gt;" in page.text  # escaped, never markup
    assert page.text.count(" checked") == 2
    saved = client.post(url, data={"form": "preferences", "topic": ["news"]})
    assert saved.status_code == 200
    assert "Saved." in saved.text
    assert consents(store) == [(ref.contact_id, "offers", "opted_out", "preference_center")]
    refused = client.post(url, data={"form": "preferences", "topic": ["nope"]})
    assert refused.status_code == 400
    assert "is not a topic" in refused.text
    client.post(url, data={"form": "preferences", "unsubscribe_all": "1"})
    assert (ref.contact_id, "marketing", "opted_out", "preference_center") in consents(store)
    assert client.get(url.replace("/preferences/", "/preferences/x")).status_code == 404


def _admin_key(store: Store, clock: FakeClock) -> dict[str, str]:
    with store.begin() as conn:
        _, admin = create_key(conn, SECRET, KeyKind.ADMIN, "test admin", clock.now_ms())
    return {"Authorization": f"Bearer {admin}"}


def test_topics_api(client: httpx.Client, store: Store, clock: FakeClock) -> None:
    admin = _admin_key(store, clock)
    assert client.get("/api/topics").status_code == 401
    assert client.put("/api/topics/news", json={"name": "News"}, headers=admin).status_code \
        == 201
    assert client.put("/api/topics/news", json={"name": "News!"}, headers=admin).status_code \
        == 200
    bad = client.put("/api/topics/Bad%20Key", json={"name": "x"}, headers=admin)
    assert bad.status_code == 400
    assert bad.json()["error"]["field"] == "key"
    assert [t["name"] for t in client.get("/api/topics", headers=admin).json()["items"]] \
        == ["News!"]
    assert client.delete("/api/topics/news", headers=admin).status_code == 200
    assert client.delete("/api/topics/news", headers=admin).status_code == 404


def _sendgrid_headers(body: bytes, stamp: int) -> dict[str, str]:
    signature = SG_PRIVATE.sign(str(stamp).encode() + body, ec.ECDSA(hashes.SHA256()))
    return {"X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": str(stamp),
            "Content-Type": "application/json"}


def test_sendgrid_hook(client: httpx.Client, store: Store, clock: FakeClock) -> None:
    ref = sent_email(store, clock)
    o = schema.outbox
    with store.begin() as conn:
        conn.execute(sa.update(o).where(o.c.id == ref.outbox_id).values(
            provider_ref="sg-abc123"))
    body = orjson.dumps([
        {"email": "ann@example.com", "timestamp": clock.now_ms() // 1000, "event": "bounce",
         "type": "bounce", "status": "5.1.1", "reason": "550 no such user",
         "sg_event_id": "e1", "sg_message_id": "sg-abc123.filter0001.1.2"}])
    stamp = clock.now_ms() // 1000
    answer = client.post("/hooks/sendgrid", content=body, headers=_sendgrid_headers(body, stamp))
    assert answer.status_code == 200
    assert answer.json()["suppressed"] == 1
    repeat = client.post("/hooks/sendgrid", content=body, headers=_sendgrid_headers(body, stamp))
    assert repeat.json()["duplicates"] == 1
    tampered = client.post("/hooks/sendgrid", content=body.replace(b"bounce", b"open  "),
                           headers=_sendgrid_headers(body, stamp))
    assert tampered.status_code == 401
    stale = client.post("/hooks/sendgrid", content=body,
                        headers=_sendgrid_headers(body, stamp - 3600))
    assert stale.status_code == 401
    assert [(n, p["bounce_type"]) for n, p in events(store)] == [("email.bounced", "hard")]
    s = schema.suppressions
    with store.read() as conn:
        assert conn.execute(sa.select(s.c.reason)).scalar_one() == "hard_bounce"


def test_postmark_hook(client: httpx.Client, store: Store, clock: FakeClock) -> None:
    ref = sent_email(store, clock)
    o = schema.outbox
    with store.begin() as conn:
        conn.execute(sa.update(o).where(o.c.id == ref.outbox_id).values(provider_ref="pm-1"))
    body = {"RecordType": "SpamComplaint", "ID": 42, "MessageID": "pm-1",
            "Email": "ann@example.com", "BouncedAt": "2026-01-01T10:00:00Z"}
    assert client.post("/hooks/postmark", json=body).status_code == 401
    assert client.post("/hooks/postmark", json=body, auth=("pm", "wrong")).status_code == 401
    answer = client.post("/hooks/postmark", json=body, auth=("pm", "pm-pass"))
    assert answer.status_code == 200
    assert answer.json()["recorded"] == 1
    bad = client.post("/hooks/postmark", content=b"{", auth=("pm", "pm-pass"))
    assert bad.status_code == 400
    assert bad.json()["error"]["field"] == "body"
    assert [n for n, _ in events(store)] == ["email.complained"]


def test_dsn_hook(client: httpx.Client, store: Store, clock: FakeClock) -> None:
    sent_email(store, clock, key="k-dsn")
    raw = postfix_dsn("ann@example.com", message_id("k-dsn"), key=None)
    assert client.post("/hooks/dsn", content=raw).status_code == 401
    assert client.post("/hooks/dsn", content=raw,
                       headers={"Authorization": "Bearer wrong"}).status_code == 401
    answer = client.post("/hooks/dsn", content=raw,
                         headers={"Authorization": "Bearer dsn-secret-value"})
    assert answer.status_code == 200
    assert answer.json()["suppressed"] == 1
    admin = _admin_key(store, clock)
    again = client.post("/hooks/dsn", content=raw, headers=admin)
    assert again.status_code == 200
    assert again.json()["duplicates"] == 1
    refused = client.post("/hooks/dsn", content=b"Subject: hi\r\n\r\nhello", headers=admin)
    assert refused.status_code == 400
    assert "multipart/report" in refused.json()["error"][
        "message"]
