"""Send-time policies: consent modes, frequency caps and quiet hours, per workspace and per
journey, stored in `send_policies` and read by the interceptors once per batch.

A policy is a document (YAML or JSON for the CLI, JSON over HTTP)::

    timezone: Europe/Berlin            # workspace only: for contacts without a time zone
    consent: {email: opt_in, sms: opt_in}   # workspace only: per channel, default opt_out
    caps:
      - {channel: email, limit: 2, window: 1d}                 # per local calendar day
      - {channel: sms, limit: 3, window: 7d, on_exceed: defer}
      - {channel: email, limit: 1, window: 4h}                 # rolling
    quiet_hours: {start: "21:00", end: "08:00", channels: [sms, email]}

The scope `workspace` applies to every message; `journey:<key>` adds caps that count only
that journey's sends and replaces the workspace's quiet hours for that journey's messages.
The models are pydantic (they are the edge format too) and frozen; `parse_policy` turns any
validation error into one `ValidationFailed` naming the field, e.g.
`caps[1].window: '7x' is not a duration; use 30m, 12h or 7d`.
"""

from __future__ import annotations

import datetime as dt
import difflib
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import sqlalchemy as sa
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from sqlalchemy.engine import Connection

from cadenza.clock import Clock
from cadenza.contacts import CHANNELS
from cadenza.errors import NotFound, ValidationFailed
from cadenza.store import Store, dialect_insert, schema

logger = logging.getLogger("cadenza.channels.policies")

WORKSPACE = "workspace"
JOURNEY_PREFIX = "journey:"
CONSENT_CHANNELS = tuple(c for c in CHANNELS if c != "webhook")
"""Channels that reach a person and so need consent (a webhook goes to a system)."""
MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
MAX_WINDOW_MS = 90 * DAY_MS
_DURATION = re.compile(r"^\s*(\d{1,6})\s*([mhd])\s*$")
_UNIT_MS = {"m": MINUTE_MS, "h": HOUR_MS, "d": DAY_MS}
_CLOCK_TIME = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_JOURNEY_KEY = re.compile(r"^[a-z0-9][a-z0-9_.\-]{0,127}$")
_UTC = dt.UTC

ConsentMode = Literal["opt_in", "opt_out"]


# --- time zones and local time --------------------------------------------------------------


@lru_cache(maxsize=1024)
def _zone_or_none(name: str) -> dt.tzinfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def check_timezone(name: str, field: str = "timezone") -> str:
    """`name` is an IANA time zone; raise with a suggestion when it is not."""
    if _zone_or_none(name) is not None:
        return name
    close = difflib.get_close_matches(name, sorted(available_timezones()), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else "; use an IANA name like Europe/Berlin"
    raise ValidationFailed(field, f"{name!r} is not a time zone{hint}")


def contact_zone(contact_tz: str | None, fallback: str | None) -> dt.tzinfo:
    """The zone a contact's local time is read in: their own when it is known, else the
    workspace's, else UTC."""
    for name in (contact_tz, fallback):
        if name:
            zone = _zone_or_none(name)
            if zone is not None:
                return zone
    return _UTC


def _local(ms: int, tz: dt.tzinfo) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, tz)


def _ms(moment: dt.datetime) -> int:
    return int(moment.timestamp() * 1000)


def local_midnight(day: dt.date, tz: dt.tzinfo) -> int:
    """The first instant of local `day` (when midnight is skipped by DST, the instant the day
    starts)."""
    return _ms(dt.datetime(day.year, day.month, day.day, tzinfo=tz, fold=0))


def _wall_ms(ms: int, tz: dt.tzinfo) -> int:
    local = _local(ms, tz)
    return ((local.hour * 60 + local.minute) * 60 + local.second) * 1000 + \
        local.microsecond // 1000


def _offset_change(start_ms: int, end_ms: int, tz: dt.tzinfo) -> int | None:
    """The first instant in (start, end] whose UTC offset differs from start's; None when the
    offset is the same at both ends (zones change at most once in a few days)."""
    before = _local(start_ms, tz).utcoffset()
    if _local(end_ms, tz).utcoffset() == before:
        return None
    low, high = start_ms, end_ms
    while high - low > 1:
        middle = (low + high) // 2
        if _local(middle, tz).utcoffset() == before:
            low = middle
        else:
            high = middle
    return high


# --- the policy model -----------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@lru_cache(maxsize=256)
def parse_duration(value: str) -> int:
    """Milliseconds in a duration written `30m`, `12h` or `7d`."""
    match = _DURATION.match(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"{value!r} is not a duration; use 30m, 12h or 7d")
    ms = int(match[1]) * _UNIT_MS[match[2]]
    if not MINUTE_MS <= ms <= MAX_WINDOW_MS:
        raise ValueError(f"{value!r} must be between 1m and 90d")
    return ms


def _check_channel_name(value: str) -> str:
    from cadenza.channels.registry import channel_names  # the registry imports channels

    known = sorted(set(CHANNELS) | set(channel_names()))
    if value in known:
        return value
    close = difflib.get_close_matches(value, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else f"; one of {', '.join(known)}"
    raise ValueError(f"{value!r} is not a channel{hint}")


class FrequencyCap(_Model):
    """At most `limit` messages on `channel` to one contact per `window`."""

    channel: str
    """The channel counted and capped (email, sms, ...)."""
    limit: int = Field(ge=1, le=10_000)
    """How many messages the window allows."""
    window: str
    """`30m` and `12h` are rolling; `1d` is the contact's local calendar day, `7d` today and
    the previous six local days."""
    on_exceed: Literal["drop", "defer"] = "drop"
    """`drop` cancels the message over the cap (with the reason); `defer` holds it until the
    window has room again."""

    @field_validator("channel")
    @classmethod
    def _known_channel(cls, value: str) -> str:
        return _check_channel_name(value)

    @field_validator("window")
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration(value)
        return value.strip()

    @property
    def window_ms(self) -> int:
        """The window's length in milliseconds."""
        return parse_duration(self.window)

    @property
    def local_days(self) -> int | None:
        """Whole local days for a `d` window; None for a rolling window."""
        return self.window_ms // DAY_MS if self.window.endswith("d") else None

    def window_start(self, now_ms: int, tz: dt.tzinfo) -> int:
        """The first instant counted at `now_ms`."""
        return _window_start(self.window, now_ms, tz)

    def room_at(self, sent: Sequence[int], now_ms: int, tz: dt.tzinfo) -> int:
        """The earliest instant after `now_ms` when one more message fits, given the send
        times `sent` counted in the window now (at least `limit` of them)."""
        days = self.local_days
        if days is None:
            ordered = sorted(sent)
            # The window [t - W, t] must lose its oldest sends until fewer than `limit` stay.
            return ordered[len(ordered) - self.limit] + self.window_ms + 1
        today = _local(now_ms, tz).date()
        sent_days = [_local(t, tz).date() for t in sent]
        for ahead in range(1, days + 1):
            first = today + dt.timedelta(days=ahead - days + 1)
            if sum(1 for day in sent_days if day >= first) < self.limit:
                return local_midnight(today + dt.timedelta(days=ahead), tz)
        raise AssertionError("the window is empty after `days` local days")

    def describe(self) -> str:
        """`2 email per 1d` for reasons."""
        return f"{self.limit} {self.channel} per {self.window}"


@lru_cache(maxsize=4096)
def _window_start(window: str, now_ms: int, tz: dt.tzinfo) -> int:
    # Cached: a batch shares one `now` and a few zones, and local dates are not free.
    length = parse_duration(window)
    if not window.endswith("d"):
        return now_ms - length
    today = _local(now_ms, tz).date()
    return local_midnight(today - dt.timedelta(days=length // DAY_MS - 1), tz)


def _clock_minutes(value: str) -> int:
    match = _CLOCK_TIME.match(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"{value!r} is not a time of day; use HH:MM, e.g. 21:00")
    return int(match[1]) * 60 + int(match[2])


class QuietHours(_Model):
    """No message on `channels` while the contact's local time is in [start, end)."""

    start: str
    """Local time the quiet window opens, HH:MM."""
    end: str
    """Local time it closes, HH:MM; earlier than `start` for a window over midnight."""
    channels: tuple[str, ...] = CONSENT_CHANNELS
    """Channels held back (default: every channel that reaches a person)."""

    @field_validator("start", "end")
    @classmethod
    def _clock_time(cls, value: str) -> str:
        _clock_minutes(value)
        return value

    @field_validator("channels")
    @classmethod
    def _known_channels(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("is empty; list the channels to hold back, or remove quiet_hours")
        return tuple(_check_channel_name(v) for v in value)

    @model_validator(mode="after")
    def _not_empty(self) -> QuietHours:
        if self.start == self.end:
            raise ValueError(f"start and end are both {self.start}: the window is empty; "
                             "remove quiet_hours to turn them off")
        return self

    @property
    def _bounds(self) -> tuple[int, int]:
        return _clock_minutes(self.start) * MINUTE_MS, _clock_minutes(self.end) * MINUTE_MS

    def applies_to(self, channel: str) -> bool:
        """True when messages on `channel` are held back."""
        return channel in self.channels

    def inside(self, ms: int, tz: dt.tzinfo) -> bool:
        """True when the local wall-clock time of `ms` in `tz` is in the window."""
        wall = _wall_ms(ms, tz)
        start, end = self._bounds
        return start <= wall < end if start < end else (wall >= start or wall < end)

    def release_at(self, now_ms: int, tz: dt.tzinfo) -> int | None:
        """The earliest instant after `now_ms` outside the window; None when `now_ms` is
        outside already.

        Local time only moves forward between DST changes, so the window is left either when
        the wall clock reaches `end` (either occurrence of a repeated hour) or at a DST change
        itself (the clock jumps over `end`, or back before `start`). The earliest of those
        candidates that lies outside the window is the answer.
        """
        if not self.inside(now_ms, tz):
            return None
        end = _clock_minutes(self.end)
        today = _local(now_ms, tz).date()
        candidates = [
            _ms(dt.datetime.combine(today + dt.timedelta(days=d), dt.time(end // 60, end % 60),
                                    tzinfo=tz).replace(fold=fold))
            for d in (-1, 0, 1, 2) for fold in (0, 1)]
        change = _offset_change(now_ms, now_ms + 26 * HOUR_MS, tz)
        if change is not None:
            candidates.append(change)
        return min(c for c in candidates if c > now_ms and not self.inside(c, tz))

    def describe(self) -> str:
        """`21:00-08:00` for reasons."""
        return f"{self.start}-{self.end}"


class SendPolicy(_Model):
    """One scope's policy; the empty policy changes nothing."""

    timezone: str | None = None
    """Workspace only: the zone of contacts who have none (else UTC)."""
    consent: dict[str, ConsentMode] = Field(default_factory=dict)
    """Workspace only: per channel, `opt_out` (send unless opted out; the default) or
    `opt_in` (send only with an opted-in consent row)."""
    caps: tuple[FrequencyCap, ...] = Field(default=(), max_length=50)
    """Every cap a message must keep (at most 50)."""
    quiet_hours: QuietHours | None = None
    """When messages wait for the morning; a journey's replace the workspace's."""

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if _zone_or_none(value) is None:
            try:
                check_timezone(value)
            except ValidationFailed as exc:
                raise ValueError(exc.reason) from None
        return value

    @field_validator("consent")
    @classmethod
    def _consent_channels(cls, value: dict[str, ConsentMode]) -> dict[str, ConsentMode]:
        for channel in value:
            if channel not in CONSENT_CHANNELS:
                close = difflib.get_close_matches(channel, CONSENT_CHANNELS, n=1)
                hint = (f" (did you mean {close[0]!r}?)" if close
                        else f"; one of {', '.join(CONSENT_CHANNELS)}")
                raise ValueError(f"{channel!r} is not a channel that needs consent{hint}")
        return value

    def consent_mode(self, channel: str) -> ConsentMode:
        """The consent mode of `channel` (opt_out unless set)."""
        return self.consent.get(channel, "opt_out")

    def to_config(self) -> dict[str, Any]:
        """The stored form: only what differs from the defaults."""
        return self.model_dump(mode="json", exclude_defaults=True)


def _field_path(loc: Sequence[int | str]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


_FIELDS: dict[str, tuple[str, ...]] = {
    "": tuple(SendPolicy.model_fields),
    "caps": tuple(FrequencyCap.model_fields),
    "quiet_hours": tuple(QuietHours.model_fields),
}


def _reason(error: Mapping[str, Any]) -> str:
    kind = error["type"]
    loc = error["loc"]
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        parent = next((str(p) for p in reversed(loc[:-1]) if isinstance(p, str)), "")
        known = _FIELDS.get(parent, ())
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else f"; known: {', '.join(known)}"
        return f"is not a policy setting{hint}"
    message = str(error["msg"]).removeprefix("Value error, ")
    return message[0].lower() + message[1:] if message[:1].isupper() and \
        not message.startswith(("'", '"')) else message


def parse_policy(data: Any, scope: str = WORKSPACE) -> SendPolicy:
    """A policy from its document; ValidationFailed names the first bad field."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ValidationFailed("policy", f"must be a mapping of settings (timezone, consent, "
                               f"caps, quiet_hours), got {type(data).__name__}")
    try:
        policy = SendPolicy.model_validate(dict(data))
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ValidationFailed(_field_path(first["loc"]) or "policy", _reason(first)) from None
    if scope != WORKSPACE:
        for name in ("timezone", "consent"):
            if name in policy.model_fields_set:
                raise ValidationFailed(name, "is set for the whole workspace; put it in the "
                                       "workspace policy, not a journey's")
    return policy


# --- scopes and storage ---------------------------------------------------------------------


def check_scope(scope: str) -> str | None:
    """Validate `scope`; the journey key for `journey:<key>`, None for the workspace."""
    if scope == WORKSPACE:
        return None
    if scope.startswith(JOURNEY_PREFIX):
        key = scope.removeprefix(JOURNEY_PREFIX)
        if _JOURNEY_KEY.match(key):
            return key
    raise ValidationFailed("scope", f"{scope[:160]!r} is not a scope; use 'workspace' or "
                           "'journey:<key>' (e.g. journey:trial-onboarding)")


def journey_scope(key: str) -> str:
    """The scope of journey `key`."""
    return JOURNEY_PREFIX + key


@dataclass(frozen=True)
class PolicySet:
    """The policies one batch is checked against."""

    workspace: SendPolicy = field(default_factory=SendPolicy)
    journeys: Mapping[str, SendPolicy] = field(default_factory=dict)
    """By journey key; journeys without a policy are absent."""

    def journey(self, key: str | None) -> SendPolicy | None:
        """The policy of journey `key`, if it has one."""
        return self.journeys.get(key) if key else None

    def zone(self, contact_tz: str | None) -> dt.tzinfo:
        """The zone for a contact with time zone `contact_tz`."""
        return contact_zone(contact_tz, self.workspace.timezone)

    def quiet_hours(self, journey: str | None) -> QuietHours | None:
        """The journey's quiet hours when it sets them, else the workspace's."""
        own = self.journey(journey)
        if own is not None and own.quiet_hours is not None:
            return own.quiet_hours
        return self.workspace.quiet_hours

    def caps(self, journey: str | None) -> list[tuple[str | None, FrequencyCap]]:
        """Every cap a message of `journey` must keep, with the journey the cap counts
        (None: every send to the contact)."""
        found: list[tuple[str | None, FrequencyCap]] = [(None, c) for c in self.workspace.caps]
        own = self.journey(journey)
        if own is not None:
            found.extend((journey, c) for c in own.caps)
        return found

    @property
    def has_caps(self) -> bool:
        """True when any policy in the set caps anything."""
        return bool(self.workspace.caps) or any(p.caps for p in self.journeys.values())


def load_policy_set(conn: Connection, journeys: Iterable[str | None] = ()) -> PolicySet:
    """The workspace policy and those of `journeys`, in one statement.

    A stored policy that no longer validates (written by another version) is logged and
    ignored rather than stopping every send.
    """
    p = schema.send_policies
    scopes = [WORKSPACE, *sorted({journey_scope(k) for k in journeys if k})]
    rows = conn.execute(sa.select(p.c.scope, p.c.config).where(p.c.scope.in_(scopes))).all()
    workspace = SendPolicy()
    by_journey: dict[str, SendPolicy] = {}
    for scope, config in rows:
        try:
            policy = parse_policy(config, scope)
        except ValidationFailed as exc:
            logger.error("send policy %r is not valid and is ignored: %s", scope, exc.message)
            continue
        if scope == WORKSPACE:
            workspace = policy
        else:
            by_journey[scope.removeprefix(JOURNEY_PREFIX)] = policy
    return PolicySet(workspace, by_journey)


@dataclass(frozen=True)
class StoredPolicy:
    """A policy as stored: its scope, settings and last change."""

    scope: str
    policy: SendPolicy
    updated_at: int | None
    """None for the workspace's built-in default (nothing stored)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"scope": self.scope, "policy": self.policy.to_config(),
                "stored": self.updated_at is not None, "updated_at": self.updated_at}


class PolicyService:
    """Read, set and clear send policies per scope."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    def all(self) -> list[StoredPolicy]:
        """Every stored policy, the workspace first."""
        p = schema.send_policies
        with self.store.read() as conn:
            rows = conn.execute(sa.select(p.c.scope, p.c.config, p.c.updated_at)).all()
        found = [StoredPolicy(scope, _lenient(config, scope), updated)
                 for scope, config, updated in rows]
        return sorted(found, key=lambda s: (s.scope != WORKSPACE, s.scope))

    def get(self, scope: str) -> StoredPolicy:
        """The policy of `scope`; the workspace has a default, a journey without one is not
        found."""
        check_scope(scope)
        p = schema.send_policies
        with self.store.read() as conn:
            row = conn.execute(sa.select(p.c.config, p.c.updated_at)
                               .where(p.c.scope == scope)).first()
        if row is None:
            if scope == WORKSPACE:
                return StoredPolicy(scope, SendPolicy(), None)
            raise NotFound("policy", scope)
        return StoredPolicy(scope, _lenient(row[0], scope), row[1])

    def set(self, scope: str, document: Any) -> tuple[StoredPolicy, bool]:
        """Validate and store the policy of `scope`; return it and whether it is new. The next
        dispatch batch applies it."""
        journey = check_scope(scope)
        policy = parse_policy(document, scope)
        now = self.clock.now_ms()
        p = schema.send_policies
        with self.store.begin() as conn:
            if journey is not None:
                j = schema.journeys
                if conn.execute(sa.select(j.c.id).where(j.c.key == journey)).first() is None:
                    raise NotFound("journey", journey)
            existed = conn.execute(sa.select(p.c.scope).where(p.c.scope == scope)
                                   ).first() is not None
            insert = dialect_insert(conn, p)
            conn.execute(insert.on_conflict_do_update(
                index_elements=["scope"],
                set_={"config": insert.excluded.config,
                      "updated_at": insert.excluded.updated_at}),
                {"scope": scope, "config": policy.to_config(), "updated_at": now})
        return StoredPolicy(scope, policy, now), not existed

    def delete(self, scope: str) -> bool:
        """Remove the policy of `scope` (the workspace falls back to the default); True when
        there was one."""
        check_scope(scope)
        p = schema.send_policies
        with self.store.begin() as conn:
            return bool(conn.execute(sa.delete(p).where(p.c.scope == scope)).rowcount)


def _lenient(config: Any, scope: str) -> SendPolicy:
    try:
        return parse_policy(config, scope)
    except ValidationFailed as exc:
        logger.error("send policy %r is not valid: %s", scope, exc.message)
        return SendPolicy()
