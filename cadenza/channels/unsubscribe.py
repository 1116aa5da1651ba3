"""Unsubscribe and the preference centre, over consents and the `topics` table.

A recipient is identified by the signed token in the link they followed (see `tokens`), never
by anything they type. Unsubscribing records consent `opted_out` for the message's channel and
purpose (source `unsubscribe`, with the IP); the preference centre shows one switch per topic
of the channel (a topic is a consent purpose with a name) and "unsubscribe from all
marketing". Both only write real changes, so repeating a request changes nothing and records
no second event. Consent is checked again when each message is sent, so a change also stops
messages that are already queued.

A transactional message's unsubscribe link opts out of marketing: receipts and password
resets are not something one unsubscribes from, and the link must still do what it says.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from cadenza.channels.feedback import MessageEvent, record_message_events
from cadenza.channels.policies import load_policy_set
from cadenza.channels.tokens import TokenClaims, TokenInvalid, TokenKind, TokenSigner
from cadenza.clock import Clock
from cadenza.contacts import ConsentChange, ConsentStatus, check_channel, record_consent
from cadenza.errors import NotFound, ValidationFailed
from cadenza.store import Store, schema

MARKETING = "marketing"
TRANSACTIONAL = "transactional"
_TOPIC_KEY = re.compile(r"^[a-z][a-z0-9_\-:.]{0,63}$")
_t = schema.topics
_c = schema.contacts
_k = schema.consents


@dataclass(frozen=True)
class Topic:
    """A subscription topic: a consent purpose recipients can switch on and off."""

    key: str
    name: str
    description: str = ""
    channel: str = "email"
    created_at: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"key": self.key, "name": self.name, "description": self.description,
                "channel": self.channel, "created_at": self.created_at}


class TopicService:
    """Add, list and remove topics."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    def add(self, key: str, name: str, description: str = "",
            channel: str = "email") -> tuple[Topic, bool]:
        """Create or rename a topic; True when it was created."""
        if not _TOPIC_KEY.match(key):
            raise ValidationFailed("key", f"{key!r} must be a lower-case slug such as "
                                   "'newsletter' or 'product-updates' (it is a consent purpose)")
        if key in (MARKETING, TRANSACTIONAL):
            raise ValidationFailed("key", f"{key!r} is reserved: 'unsubscribe from all "
                                   "marketing' covers it; choose a narrower name")
        if not name.strip() or len(name) > 256:
            raise ValidationFailed("name", "must be 1 to 256 characters")
        if len(description) > 2000:
            raise ValidationFailed("description", "may have at most 2000 characters")
        check_channel(channel)
        topic = Topic(key, name.strip(), description, channel, self.clock.now_ms())

        def work(conn: Connection) -> bool:
            found = conn.execute(sa.select(_t.c.id).where(_t.c.key == key)).first()
            if found is None:
                conn.execute(sa.insert(_t).values(**topic.to_dict()))
                return True
            conn.execute(sa.update(_t).where(_t.c.key == key).values(
                name=topic.name, description=description, channel=channel))
            return False

        return topic, self.store.retry(work)

    def all(self, channel: str | None = None) -> list[Topic]:
        """Every topic (of `channel`), by key."""
        with self.store.read() as conn:
            return _topics(conn, channel)

    def remove(self, key: str) -> None:
        """Delete a topic (consents given for it stay on record); NotFound when absent."""
        def work(conn: Connection) -> int:
            return int(conn.execute(sa.delete(_t).where(_t.c.key == key)).rowcount)

        if not self.store.retry(work):
            raise NotFound("topic", key)


def _topics(conn: Connection, channel: str | None) -> list[Topic]:
    query = sa.select(_t.c.key, _t.c.name, _t.c.description, _t.c.channel, _t.c.created_at)
    if channel is not None:
        query = query.where(_t.c.channel == channel)
    return [Topic(*row) for row in conn.execute(query.order_by(_t.c.key)).all()]


def mask_address(address: str | None) -> str:
    """`j•••@example.com`: enough for a person to recognise their address on a page that a
    forwarded email's reader might also open."""
    if not address:
        return ""
    local, at, domain = address.partition("@")
    return f"{local[:1]}•••{at}{domain}" if at else f"{address[:2]}•••"


@dataclass(frozen=True)
class UnsubscribeView:
    """What the unsubscribe page shows."""

    address: str
    channel: str
    purpose: str
    """The purpose unsubscribing opts out of."""
    unsubscribed: bool
    """Already opted out."""
    shadow: bool
    preferences_url: str | None


@dataclass(frozen=True)
class TopicChoice:
    """One switch of the preference centre."""

    topic: Topic
    subscribed: bool


@dataclass(frozen=True)
class Preferences:
    """What the preference centre shows."""

    address: str
    channel: str
    choices: list[TopicChoice]
    marketing_off: bool
    """'Unsubscribe from all marketing' is on."""
    shadow: bool


class UnsubscribeService:
    """Unsubscribe and preference changes from verified tokens."""

    def __init__(self, store: Store, clock: Clock, signer: TokenSigner,
                 public_url: str = "http://127.0.0.1:8000") -> None:
        self.store = store
        self.clock = clock
        self.signer = signer
        self.base = public_url.rstrip("/")

    # --- unsubscribe ------------------------------------------------------------------------

    def view(self, token: str) -> UnsubscribeView:
        """The unsubscribe page's facts; changes nothing."""
        claims = self.signer.verify(token, TokenKind.UNSUBSCRIBE)
        purpose = _opt_out_purpose(claims)
        with self.store.read() as conn:
            contact, address = _contact(conn, claims)
            statuses = _statuses(conn, contact, claims.channel)
        preferences = self.signer.sign(TokenClaims(
            TokenKind.PREFERENCES, claims.outbox_id, claims.contact_id, claims.channel,
            claims.purpose, claims.shadow))
        return UnsubscribeView(mask_address(address), claims.channel, purpose,
                               ConsentStatus.OPTED_OUT.value in (statuses.get(purpose),
                                                                 statuses.get(MARKETING)),
                               claims.shadow,
                               f"{self.base}/preferences/{preferences}")

    def unsubscribe(self, token: str, ip: str | None, *, one_click: bool = False) -> bool:
        """Opt the token's contact out of its channel and purpose; True when that changed
        anything (False for a repeat or a shadow message)."""
        claims = self.signer.verify(token, TokenKind.UNSUBSCRIBE)
        if claims.shadow:
            return False
        purpose = _opt_out_purpose(claims)
        now = self.clock.now_ms()

        def work(conn: Connection) -> bool:
            contact, _ = _contact(conn, claims)
            changed = record_consent(conn, [ConsentChange(
                contact, claims.channel, purpose, ConsentStatus.OPTED_OUT, "unsubscribe", now,
                ip=_ip(ip))])
            record_message_events(conn, [MessageEvent(
                f"unsubscribe:{claims.outbox_id}:{contact}:{claims.channel}:{purpose}",
                contact, f"{claims.channel}.unsubscribed", now,
                {"outbox_id": claims.outbox_id, "channel": claims.channel,
                 "purpose": purpose, "one_click": one_click, "source": "link"})], now)
            return changed > 0

        return self.store.retry(work)

    # --- preference centre ------------------------------------------------------------------

    def preferences(self, token: str) -> Preferences:
        """The preference centre's switches for the token's contact and channel."""
        claims = self.signer.verify(token, TokenKind.PREFERENCES)
        with self.store.read() as conn:
            return self._preferences(conn, claims)

    def _preferences(self, conn: Connection, claims: TokenClaims) -> Preferences:
        contact, address = _contact(conn, claims)
        statuses = _statuses(conn, contact, claims.channel)
        umbrella = statuses.get(MARKETING)
        mode = load_policy_set(conn).workspace.consent_mode(claims.channel)
        choices = [TopicChoice(t, _effective(statuses.get(t.key), umbrella, mode))
                   for t in _topics(conn, claims.channel)]
        return Preferences(mask_address(address), claims.channel, choices,
                           umbrella == ConsentStatus.OPTED_OUT.value, claims.shadow)

    def update(self, token: str, subscribed: Collection[str], marketing_off: bool,
               ip: str | None) -> Preferences:
        """Apply a submitted preference form: the topics in `subscribed` on, the others off
        (a topic never chosen stays unset), all marketing off or on again."""
        claims = self.signer.verify(token, TokenKind.PREFERENCES)
        now = self.clock.now_ms()

        def work(conn: Connection) -> Preferences:
            current = self._preferences(conn, claims)
            if claims.shadow:
                return current
            known = {c.topic.key for c in current.choices}
            unknown = sorted(set(subscribed) - known)
            if unknown:
                raise ValidationFailed("topic", f"{unknown[0]!r} is not a topic of this "
                                       f"{claims.channel} list; reload the page")
            contact, _ = _contact(conn, claims)
            wanted: dict[str, ConsentStatus] = {}
            for choice in current.choices:
                # Only what differs from what the person gets now is written: an untouched
                # form records nothing, and no consent is invented from a default.
                on = choice.topic.key in subscribed and not marketing_off
                if on != choice.subscribed:
                    wanted[choice.topic.key] = (ConsentStatus.OPTED_IN if on
                                                else ConsentStatus.OPTED_OUT)
            if marketing_off != current.marketing_off:
                wanted[MARKETING] = (ConsentStatus.OPTED_OUT if marketing_off
                                     else ConsentStatus.OPTED_IN)
            changes = [ConsentChange(contact, claims.channel, purpose, status,
                                     "preference_center", now, ip=_ip(ip))
                       for purpose, status in sorted(wanted.items())]
            if record_consent(conn, changes):
                summary = ",".join(f"{p}={s.value}" for p, s in sorted(wanted.items()))
                events = [MessageEvent(
                    f"preferences:{claims.outbox_id}:{contact}:{now}:{summary}", contact,
                    f"{claims.channel}.preferences_changed", now,
                    {"outbox_id": claims.outbox_id, "channel": claims.channel,
                     "changes": {p: s.value for p, s in sorted(wanted.items())}})]
                if marketing_off and not current.marketing_off:
                    events.append(MessageEvent(
                        f"unsubscribe:{claims.outbox_id}:{contact}:{claims.channel}:"
                        f"{MARKETING}", contact, f"{claims.channel}.unsubscribed", now,
                        {"outbox_id": claims.outbox_id, "channel": claims.channel,
                         "purpose": MARKETING, "one_click": False,
                         "source": "preference_center"}))
                record_message_events(conn, events, now)
            return self._preferences(conn, claims)

        return self.store.retry(work)


def _effective(own: str | None, umbrella: str | None, mode: str) -> bool:
    """Whether messages of a topic reach the contact now, as the consent rule at send time
    decides it: the topic's own row, else the `marketing` row, else the channel's mode."""
    if umbrella == ConsentStatus.OPTED_OUT.value:
        return False
    if own is not None:
        return own == ConsentStatus.OPTED_IN.value
    if umbrella == ConsentStatus.OPTED_IN.value:
        return True
    return mode == "opt_out"


def _opt_out_purpose(claims: TokenClaims) -> str:
    return MARKETING if claims.purpose == TRANSACTIONAL else claims.purpose


def _contact(conn: Connection, claims: TokenClaims) -> tuple[int, str | None]:
    """The live contact the token names (following merges) and its address for the channel;
    a contact that no longer exists makes the link invalid."""
    contact_id = claims.contact_id
    for _ in range(8):
        row = conn.execute(sa.select(_c.c.merged_into, _c.c.email, _c.c.phone)
                           .where(_c.c.id == contact_id)).first()
        if row is None:
            raise TokenInvalid("the contact no longer exists")
        if row.merged_into is None:
            return contact_id, row.email if claims.channel == "email" else row.phone
        contact_id = int(row.merged_into)
    raise TokenInvalid("the contact's merges go too deep")


def _statuses(conn: Connection, contact_id: int, channel: str) -> dict[str, str]:
    return dict(conn.execute(
        sa.select(_k.c.purpose, _k.c.status).where(_k.c.contact_id == contact_id,
                                                  _k.c.channel == channel)).all())


def _ip(ip: str | None) -> str | None:
    return ip[:45] if ip else None
