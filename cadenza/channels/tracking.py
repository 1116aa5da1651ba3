"""Tracking: the real `LinkBuilder` (signed unsubscribe, preference and tracking links, HTML
decorated with click redirects and an open pixel) and what happens when those links are hit.

Decoration is a single regular-expression pass over the rendered HTML, not a parser: the
dispatcher's budget is about 500 µs per email end to end, and the only thing rewritten is the
`href` of `<a>` start tags (the template renderer escaped every value, so a `>` cannot hide
inside an attribute). Links left alone: anything not http(s) (mailto:, tel:, #anchors), our
own unsubscribe/preference/tracking links, and anchors marked `data-notrack`.

A click token carries its target URL, so the redirect goes exactly where the email linked
and cannot be pointed anywhere else (no open redirect). Shadow messages get the same links,
but their tokens say shadow and nothing is recorded when they are hit.

Machine opens and bot clicks are flagged, not dropped (see `classify_open`/`classify_click`):
an open by Apple Mail Privacy Protection or a mail provider's image proxy, a prefetch, or a
scanner following every link in a message says little about a person.
"""

from __future__ import annotations

import html
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from cadenza.channels.feedback import MessageEvent, record_message_events
from cadenza.channels.links import LinkBuilder, MessageRef, NoLinks
from cadenza.channels.tokens import MAX_URL_CHARS, TokenClaims, TokenKind, TokenSigner
from cadenza.clock import Clock
from cadenza.store import Store, schema

_ANCHOR = re.compile(r"<a\s[^>]*>", re.IGNORECASE)
_HREF = re.compile(r"""(\shref\s*=\s*)(?:"([^"]*)"|'([^']*)')""", re.IGNORECASE)
_NOTRACK = re.compile(r"\sdata-notrack\b", re.IGNORECASE)
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)
_TEXT_URL = re.compile(r"https?://[^\s<>\"')\]]+", re.IGNORECASE)


@dataclass(frozen=True)
class TrackingOptions:
    """What the link builder adds to messages."""

    public_url: str = "http://127.0.0.1:8000"
    """Base URL recipients reach this server at."""
    track_opens: bool = True
    """Add an open pixel to HTML email."""
    track_clicks: bool = True
    """Rewrite the http(s) links of HTML email to signed redirects."""
    track_text_clicks: bool = False
    """Rewrite links in plain-text bodies too (they get long and unreadable)."""

    def __post_init__(self) -> None:
        if not self.public_url.startswith(("http://", "https://")):
            raise ValueError(f"public_url must start with http:// or https://, got "
                             f"{self.public_url!r}")


class TrackingLinks(LinkBuilder):
    """Signed links for every message; click redirects and an open pixel for HTML email."""

    def __init__(self, signer: TokenSigner, options: TrackingOptions | None = None) -> None:
        self.signer = signer
        self.options = options or TrackingOptions()
        self.base = self.options.public_url.rstrip("/")
        self._ours = (f"{self.base}/u/", f"{self.base}/preferences/", f"{self.base}/t/")

    def _token(self, ref: MessageRef, kind: TokenKind, url: str | None = None) -> str:
        return self.signer.sign(TokenClaims(kind, ref.outbox_id, ref.contact_id, ref.channel,
                                            ref.purpose, ref.shadow, url))

    def links(self, ref: MessageRef) -> dict[str, str]:
        """unsubscribe (the page; POST there unsubscribes, also as RFC 8058 one-click),
        one_click (the same URL, for List-Unsubscribe) and preferences."""
        unsubscribe = f"{self.base}/u/{self._token(ref, TokenKind.UNSUBSCRIBE)}"
        return {"unsubscribe": unsubscribe, "one_click": unsubscribe,
                "preferences": f"{self.base}/preferences/"
                               f"{self._token(ref, TokenKind.PREFERENCES)}"}

    def click_url(self, ref: MessageRef, url: str) -> str:
        """The signed redirect to `url`."""
        return f"{self.base}/t/c/{self._token(ref, TokenKind.CLICK, url)}"

    def open_url(self, ref: MessageRef) -> str:
        """The open pixel's URL."""
        return f"{self.base}/t/o/{self._token(ref, TokenKind.OPEN)}"

    def decorate(self, ref: MessageRef, content: Mapping[str, Any]) -> dict[str, Any]:
        """Email only: the HTML body with click redirects and the pixel; the text body's
        links when `track_text_clicks`."""
        decorated = dict(content)
        if ref.channel != "email":
            return decorated
        body = content.get("body")
        marker = content.get("html")
        if isinstance(marker, str):  # a separate HTML part beside a text body
            decorated["html"] = self._html(ref, marker)
            if isinstance(body, str) and self.options.track_text_clicks:
                decorated["body"] = self._text(ref, body)
        elif isinstance(body, str):
            if marker:
                decorated["body"] = self._html(ref, body)
            elif self.options.track_text_clicks:
                decorated["body"] = self._text(ref, body)
        text = content.get("text")
        if isinstance(text, str) and self.options.track_text_clicks:
            decorated["text"] = self._text(ref, text)
        return decorated

    def _trackable(self, url: str) -> bool:
        lowered = url[:8].lower()
        return (lowered.startswith(("http://", "https://")) and len(url) <= MAX_URL_CHARS
                and not url.startswith(self._ours))

    def _html(self, ref: MessageRef, source: str) -> str:
        out = source
        if self.options.track_clicks:
            made: dict[str, str] = {}

            def anchor(match: re.Match[str]) -> str:
                tag = match.group(0)
                lowered = tag.lower()
                if "notrack" in lowered and _NOTRACK.search(tag):
                    return tag
                found = _HREF.search(tag) if "href" in lowered else None
                if found is None:
                    return tag
                raw = found.group(2) if found.group(2) is not None else found.group(3)
                url = (html.unescape(raw) if "&" in raw else raw).strip()
                if not self._trackable(url):
                    return tag
                tracked = made.get(url)
                if tracked is None:
                    tracked = made[url] = self.click_url(ref, url)
                return f'{tag[:found.start()]}{found.group(1)}"{tracked}"{tag[found.end():]}'

            out = _ANCHOR.sub(anchor, out)
        if self.options.track_opens:
            pixel = (f'<img src="{self.open_url(ref)}" width="1" height="1" alt="" '
                     'style="display:block;border:0;width:1px;height:1px">')
            ends = list(_BODY_END.finditer(out))
            if ends:
                at = ends[-1].start()
                out = f"{out[:at]}{pixel}{out[at:]}"
            else:
                out = out + pixel
        return out

    def _text(self, ref: MessageRef, source: str) -> str:
        made: dict[str, str] = {}

        def link(match: re.Match[str]) -> str:
            url = match.group(0).rstrip(".,;:!?")
            rest = match.group(0)[len(url):]
            if not self._trackable(url):
                return match.group(0)
            tracked = made.get(url)
            if tracked is None:
                tracked = made[url] = self.click_url(ref, url)
            return tracked + rest

        return _TEXT_URL.sub(link, source)


def link_builder_from_settings(settings: Any) -> LinkBuilder:
    """The dispatcher's link builder: `TrackingLinks` from `public_url`, `secret_key`,
    `token_old_keys` and the `track_*` settings; `NoLinks` without settings."""
    if settings is None:
        return NoLinks()
    options = TrackingOptions(public_url=settings.public_url,
                              track_opens=settings.track_opens,
                              track_clicks=settings.track_clicks,
                              track_text_clicks=settings.track_text_clicks)
    return TrackingLinks(TokenSigner.from_settings(settings), options)


# --- when a link is hit -------------------------------------------------------------------

_PROXIES = (
    (re.compile(r"GoogleImageProxy|ggpht\.com", re.IGNORECASE), "gmail_proxy"),
    (re.compile(r"YahooMailProxy", re.IGNORECASE), "yahoo_proxy"),
)
_SCANNERS = re.compile(
    r"bot\b|bot/|crawl|spider|slurp|scan|preview|headless|externalhit|python-requests|"
    r"python-urllib|aiohttp|httpx|go-http-client|curl/|wget|libwww|java/|okhttp|"
    r"barracuda|proofpoint|mimecast|safelinks|trend ?micro|symantec|messagelabs|forcepoint|"
    r"ironport|sophos|fortinet|zscaler|urldefense|linkcheck",
    re.IGNORECASE,
)
_PREFETCH_HEADERS = (("purpose", "prefetch"), ("sec-purpose", "prefetch"),
                     ("x-purpose", "preview"), ("x-moz", "prefetch"))
_APPLE = ipaddress.ip_network("17.0.0.0/8")
_APPLE_MPP_AGENT = "Mozilla/5.0"


@dataclass(frozen=True)
class Hit:
    """A request to a tracking link, as the route saw it."""

    user_agent: str = ""
    ip: str | None = None
    method: str = "GET"
    headers: Mapping[str, str] | None = None
    """Lower-case header names."""


def _prefetch(hit: Hit) -> bool:
    headers = hit.headers or {}
    return any(word in headers.get(name, "").lower() for name, word in _PREFETCH_HEADERS)


def _from_apple(ip: str | None) -> bool:
    try:
        return ip is not None and ipaddress.ip_address(ip) in _APPLE
    except ValueError:
        return False


def classify_open(hit: Hit, seconds_after_send: float | None, window_s: float) -> str | None:
    """Why an open looks machine-made (None when it looks like a person): apple_mpp (the bare
    `Mozilla/5.0` agent Mail Privacy Protection sends, or Apple's 17.0.0.0/8), gmail_proxy /
    yahoo_proxy (image proxies fetch for the person, or ahead of them), prefetch (a Purpose
    header), scanner (a security scanner's or library's agent), no_user_agent, too_soon
    (within `window_s` of sending)."""
    agent = hit.user_agent.strip()
    if not agent:
        return "no_user_agent"
    if agent == _APPLE_MPP_AGENT or _from_apple(hit.ip):
        return "apple_mpp"
    for pattern, name in _PROXIES:
        if pattern.search(agent):
            return name
    if _prefetch(hit):
        return "prefetch"
    if _SCANNERS.search(agent):
        return "scanner"
    if seconds_after_send is not None and seconds_after_send < window_s:
        return "too_soon"
    return None


def classify_click(hit: Hit, seconds_after_send: float | None, window_s: float) -> str | None:
    """Why a click looks like a bot (None when it looks like a person): head (scanners check
    links with HEAD), scanner (a security scanner's or library's agent), prefetch,
    no_user_agent, too_soon (within `window_s` of sending: people do not read that fast)."""
    if hit.method.upper() == "HEAD":
        return "head"
    agent = hit.user_agent.strip()
    if not agent:
        return "no_user_agent"
    if _SCANNERS.search(agent):
        return "scanner"
    if _prefetch(hit):
        return "prefetch"
    if seconds_after_send is not None and seconds_after_send < window_s:
        return "too_soon"
    return None


_o = schema.outbox
_c = schema.contacts


class TrackingService:
    """Records opens and clicks from verified tokens as message events."""

    def __init__(self, store: Store, clock: Clock, signer: TokenSigner, *,
                 window_s: float = 5.0) -> None:
        self.store = store
        self.clock = clock
        self.signer = signer
        self.window_s = window_s

    def opened(self, token: str, hit: Hit) -> bool:
        """Record `email.opened` for an open token (TokenInvalid when it is not one); False
        when nothing was recorded (a shadow message, a row that is gone, a repeat)."""
        claims = self.signer.verify(token, TokenKind.OPEN)
        return self._record(claims, hit, "opened", token)

    def clicked(self, token: str, hit: Hit) -> str:
        """The URL a click token sends to, after recording `email.clicked` (TokenInvalid when
        it is not a click token)."""
        claims = self.signer.verify(token, TokenKind.CLICK)
        assert claims.url is not None  # a click token always carries one
        self._record(claims, hit, "clicked", token)
        return claims.url

    def _record(self, claims: TokenClaims, hit: Hit, what: str, token: str) -> bool:
        if claims.shadow:
            return False
        now = self.clock.now_ms()

        def work(conn: sa.Connection) -> bool:
            row = conn.execute(
                sa.select(_o.c.contact_id, _o.c.sent_at, _o.c.shadow, _o.c.journey_id,
                          _o.c.node, _c.c.merged_into)
                .join(_c, _c.c.id == _o.c.contact_id)
                .where(_o.c.id == claims.outbox_id)).first()
            if row is None or row.shadow or row.contact_id != claims.contact_id:
                return False
            after = (now - row.sent_at) / 1000 if row.sent_at is not None else None
            properties: dict[str, Any] = {
                "outbox_id": claims.outbox_id, "channel": claims.channel,
                "journey_id": row.journey_id, "step": row.node, "purpose": claims.purpose}
            if what == "opened":
                why = classify_open(hit, after, self.window_s)
                properties.update(machine=why is not None, machine_reason=why)
            else:
                why = classify_click(hit, after, self.window_s)
                properties.update(url=claims.url, bot=why is not None, bot_reason=why)
            if hit.user_agent:
                properties["user_agent"] = hit.user_agent[:256]
            # One event per token per second: a double-loaded pixel is one open.
            event = MessageEvent(f"{token}\x00{now // 1000}", row.merged_into or row.contact_id,
                                 f"email.{what}", now, properties)
            return record_message_events(conn, [event], now) > 0

        return self.store.retry(work)
