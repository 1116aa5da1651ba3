"""Tracking links: what decoration rewrites and leaves alone, the machine/bot heuristics, and
opens and clicks recorded as message events (never for shadow messages)."""

from __future__ import annotations

import html
import re
import time

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from cadenza.channels.links import MessageRef, NoLinks
from cadenza.channels.tokens import TokenInvalid, TokenKind, TokenSigner
from cadenza.channels.tracking import (
    Hit,
    TrackingLinks,
    TrackingOptions,
    TrackingService,
    classify_click,
    classify_open,
    link_builder_from_settings,
)
from cadenza.clock import FakeClock
from cadenza.settings import Settings
from cadenza.store import Store, schema
from tests.channels.support import add_contact, add_outbox

SECRET = "tracking-test-secret-0123456789-0123456789"
BASE = "https://mail.example.org"
SIGNER = TokenSigner(SECRET)
LINKS = TrackingLinks(SIGNER, TrackingOptions(public_url=BASE + "/"))
REF = MessageRef(outbox_id=11, contact_id=5, channel="email", purpose="marketing")
CLICK = re.compile(re.escape(BASE) + r"/t/c/([A-Za-z0-9_.-]+)")
BROWSER = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
           "Chrome/126.0 Safari/537.36")


def clicks(text: str) -> list[str]:
    """The target URLs of the click redirects in `text`."""
    out = []
    for token in CLICK.findall(text):
        url = SIGNER.verify(token, TokenKind.CLICK).url
        assert url is not None
        out.append(url)
    return out


def test_links_are_signed_for_the_message() -> None:
    links = LINKS.links(REF)
    assert set(links) == {"unsubscribe", "one_click", "preferences"}
    assert links["unsubscribe"].startswith(f"{BASE}/u/")
    assert links["one_click"] == links["unsubscribe"]
    token = links["preferences"].removeprefix(f"{BASE}/preferences/")
    claims = SIGNER.verify(token, TokenKind.PREFERENCES)
    assert (claims.outbox_id, claims.contact_id, claims.purpose) == (11, 5, "marketing")
    with pytest.raises(TokenInvalid):  # a preferences token does not unsubscribe
        SIGNER.verify(token, TokenKind.UNSUBSCRIBE)


def test_decorate_rewrites_http_links_and_leaves_the_rest() -> None:
    unsubscribe = LINKS.links(REF)["unsubscribe"]
    body = (
        '<html><body><p>Hi <a href="https://shop.example/p?a=1&amp;b=2">shop</a>, '
        "<a class='x' href='http://example.com/'>plain</a>, "
        '<A HREF="https://shop.example/p?a=1&amp;b=2">again</A>, '
        '<a href="mailto:help@example.com">mail</a>, <a href="tel:+4930123">call</a>, '
        '<a href="#top">top</a>, <a data-notrack href="https://secret.example/">skip</a>, '
        f'<a href="{unsubscribe}">unsubscribe</a>, <abbr title="x">abbr</abbr>, '
        '<a name="anchor">anchor</a></p></body></html>')
    content = {"subject": "s", "body": body, "html": True}
    out = LINKS.decorate(REF, content)
    assert out["subject"] == "s"
    assert out["html"] is True
    assert clicks(out["body"]) == ["https://shop.example/p?a=1&b=2", "http://example.com/",
                                   "https://shop.example/p?a=1&b=2"]
    for kept in ('href="mailto:help@example.com"', 'href="tel:+4930123"', 'href="#top"',
                 'data-notrack href="https://secret.example/"', f'href="{unsubscribe}"',
                 "class='x'", '<abbr title="x">', '<a name="anchor">'):
        assert kept in out["body"]
    assert out["body"].count("/t/o/") == 1
    assert re.search(r'<img src="[^"]+/t/o/[^"]+"[^>]*></body>', out["body"])
    assert content["body"] == body  # the input is not changed


def test_decorate_text_and_other_channels() -> None:
    text = {"body": "Visit https://shop.example/x, or write to help@example.com.",
            "html": False}
    assert LINKS.decorate(REF, text) == text  # text links stay readable by default
    with_text = TrackingLinks(SIGNER, TrackingOptions(public_url=BASE, track_text_clicks=True))
    out = with_text.decorate(REF, text)
    assert clicks(out["body"]) == ["https://shop.example/x"]
    assert out["body"].endswith(", or write to help@example.com.")
    sms = MessageRef(1, 2, "sms", "marketing")
    assert LINKS.decorate(sms, {"body": "<a href='https://x.example'>x</a>", "html": True}) \
        == {"body": "<a href='https://x.example'>x</a>", "html": True}


def test_a_separate_html_part_and_switches() -> None:
    content = {"body": "text https://a.example", "html": '<a href="https://a.example">a</a>'}
    out = LINKS.decorate(REF, content)
    assert clicks(out["html"]) == ["https://a.example"]
    assert out["body"] == content["body"]
    quiet = TrackingLinks(SIGNER, TrackingOptions(public_url=BASE, track_opens=False,
                                                  track_clicks=False))
    html_only = {"body": '<body><a href="https://a.example">a</a></body>', "html": True}
    assert quiet.decorate(REF, html_only) == html_only


def test_link_builder_from_settings() -> None:
    assert isinstance(link_builder_from_settings(None), NoLinks)
    built = link_builder_from_settings(Settings.load(secret_key=SECRET,
                                                     public_url="https://x.example/"))
    assert isinstance(built, TrackingLinks)
    assert built.links(REF)["unsubscribe"].startswith("https://x.example/u/")
    with pytest.raises(ValueError, match="public_url"):
        TrackingOptions(public_url="ftp://x")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(
    st.text(alphabet="abc <>/=\"'&;", max_size=12),
    st.builds(lambda u: f'<a href="https://ex.example/{u}">l</a>',
              st.text(alphabet="abcxyz0123-_~/?=", max_size=20)),
    st.just('<a href="mailto:x@y.z">m</a>'),
), max_size=12))
def test_decoration_only_touches_hrefs_and_adds_the_pixel(parts: list[str]) -> None:
    body = "".join(parts)
    out = LINKS.decorate(REF, {"body": body, "html": True})["body"]
    # Every rewritten link points where the original did, in the original order.
    originals = [html.unescape(u) for u in re.findall(r'<a href="(https://[^"]*)"', body)]
    assert clicks(out) == originals
    # Removing the redirects and the pixel gives back the input.
    restored = CLICK.sub(lambda m: SIGNER.verify(m.group(1), TokenKind.CLICK).url or "", out)
    restored = re.sub(r'<img src="[^"]+/t/o/[^"]+"[^>]*>', "", restored)
    assert restored == body


def test_decoration_is_fast() -> None:
    links = "".join(f'<p><a href="https://shop.example/item/{n}?utm_source=mail">Item {n}'
                    f"</a></p>" for n in range(10))
    body = f"<html><body><h1>Hello</h1>{links}<p>{'x' * 4000}</p></body></html>"
    content = {"subject": "Hi", "body": body, "html": True}
    rounds = 2000
    started = time.perf_counter()
    for n in range(rounds):
        ref = MessageRef(n, n, "email", "marketing")
        LINKS.links(ref)
        LINKS.decorate(ref, content)
    per_message_us = (time.perf_counter() - started) / rounds * 1e6
    print(f"links + decorate, 10 links, ~5 KB HTML: {per_message_us:.1f} µs per message")
    assert per_message_us < 500  # the dispatcher's whole budget at 2,000 emails/s


@pytest.mark.parametrize(("hit", "after", "reason"), [
    (Hit(BROWSER), 3600.0, None),
    (Hit("Mozilla/5.0"), 3600.0, "apple_mpp"),
    (Hit(BROWSER, ip="17.58.1.2"), 3600.0, "apple_mpp"),
    (Hit("Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com "
         "GoogleImageProxy)"), 3600.0, "gmail_proxy"),
    (Hit("YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html"), 3600.0,
     "yahoo_proxy"),
    (Hit(BROWSER, headers={"sec-purpose": "prefetch"}), 3600.0, "prefetch"),
    (Hit(""), 3600.0, "no_user_agent"),
    (Hit(BROWSER), 1.0, "too_soon"),
])
def test_machine_opens(hit: Hit, after: float, reason: str | None) -> None:
    assert classify_open(hit, after, 5) == reason


@pytest.mark.parametrize(("hit", "after", "reason"), [
    (Hit(BROWSER), 3600.0, None),
    (Hit(BROWSER, method="HEAD"), 3600.0, "head"),
    (Hit("Mozilla/5.0 (compatible; Barracuda Sentinel)"), 3600.0, "scanner"),
    (Hit("python-requests/2.31"), 3600.0, "scanner"),
    (Hit(""), 3600.0, "no_user_agent"),
    (Hit(BROWSER), 2.0, "too_soon"),
    (Hit(BROWSER), None, None),
])
def test_bot_clicks(hit: Hit, after: float | None, reason: str | None) -> None:
    assert classify_click(hit, after, 5) == reason


# --- recording ------------------------------------------------------------------------------

def _sent(store: Store, clock: FakeClock, *, shadow: bool = False) -> tuple[int, int]:
    contact = add_contact(store, clock.now_ms(), email="ann@example.com")
    [row] = add_outbox(store, clock.now_ms(), [{"contact_id": contact, "channel": "email",
                                                 "shadow": shadow}])
    o = schema.outbox
    with store.begin() as conn:
        conn.execute(sa.update(o).where(o.c.id == row).values(
            status="shadowed" if shadow else "sent", sent_at=clock.now_ms()))
    return contact, row


def _events(store: Store) -> list[tuple[str, dict[str, object]]]:
    e = schema.events
    with store.read() as conn:
        return [(r.name, r.properties) for r in conn.execute(
            sa.select(e.c.name, e.c.properties).order_by(e.c.id))]


def test_opens_and_clicks_become_events(store: Store, clock: FakeClock) -> None:
    contact, row = _sent(store, clock)
    service = TrackingService(store, clock, SIGNER, window_s=5)
    ref = MessageRef(row, contact, "email", "marketing")
    open_token = LINKS.open_url(ref).rsplit("/", 1)[1]
    click_token = LINKS.click_url(ref, "https://shop.example/").rsplit("/", 1)[1]
    assert service.clicked(click_token, Hit(BROWSER)) == "https://shop.example/"  # too soon
    clock.advance(60_000)
    assert service.opened(open_token, Hit(BROWSER))
    assert not service.opened(open_token, Hit(BROWSER))  # the same second: one open
    clock.advance(1000)
    assert service.opened(open_token, Hit("Mozilla/5.0"))
    service.clicked(click_token, Hit(BROWSER))
    found = _events(store)
    assert [name for name, _ in found] == ["email.clicked", "email.opened", "email.opened",
                                           "email.clicked"]
    first_click, human_open, mpp_open, human_click = (p for _, p in found)
    assert first_click["bot"] is True
    assert first_click["bot_reason"] == "too_soon"
    assert human_open["machine"] is False
    assert mpp_open["machine"] is True
    assert human_click["bot"] is False
    assert human_click["url"] == "https://shop.example/"
    assert human_click["outbox_id"] == row
    with pytest.raises(TokenInvalid):
        service.opened(click_token, Hit(BROWSER))
    with pytest.raises(TokenInvalid):
        service.clicked(open_token, Hit(BROWSER))
    assert len(_events(store)) == 4


def test_shadow_messages_record_nothing(store: Store, clock: FakeClock) -> None:
    contact, row = _sent(store, clock, shadow=True)
    service = TrackingService(store, clock, SIGNER)
    ref = MessageRef(row, contact, "email", "marketing", shadow=True)
    clock.advance(60_000)
    assert not service.opened(LINKS.open_url(ref).rsplit("/", 1)[1], Hit(BROWSER))
    url = service.clicked(LINKS.click_url(ref, "https://a.example/").rsplit("/", 1)[1],
                          Hit(BROWSER))
    assert url == "https://a.example/"
    # A token that claims live but names a shadow row records nothing either.
    live_claim = MessageRef(row, contact, "email", "marketing")
    assert not service.opened(LINKS.open_url(live_claim).rsplit("/", 1)[1], Hit(BROWSER))
    assert _events(store) == []
