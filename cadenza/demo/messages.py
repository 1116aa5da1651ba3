"""Turn simulation records into Segment-spec messages, the way the sources would send them."""

from __future__ import annotations

import datetime as dt
import random
import uuid
from typing import Any

from cadenza.demo import tables as t
from cadenza.demo.population import Person
from cadenza.demo.world import ANON, MOBILE, USER, USER_ANON, USER_MOBILE, Record

_SERVER = {"library": {"name": "analytics-node", "version": "2.1.2"}}
_ESP = {"library": {"name": "cadenza-email-events", "version": "1.0.0"}}
_USER_IDS = (USER, USER_ANON, USER_MOBILE)
_WORDS = {"api": "API", "sso": "SSO", "okrs": "OKRs", "vs": "vs.", "pdf": "PDF"}


def iso(ms: int) -> str:
    """ISO 8601 in UTC with milliseconds, as analytics libraries send it."""
    stamp = dt.datetime.fromtimestamp(ms / 1000, dt.UTC).replace(tzinfo=None)
    return stamp.isoformat(timespec="milliseconds") + "Z"


def build(record: Record, people: list[Person], ids: random.Random) -> dict[str, Any]:
    """The Segment message for one record; `ids` draws its message id."""
    ts, _seq, source, index, kind, details = record
    person = people[index]
    message: dict[str, Any] = {
        "type": kind,
        "messageId": str(uuid.UUID(int=ids.getrandbits(128), version=4)),
        "timestamp": iso(ts),
    }
    who = details.get("ids", USER)
    if who in _USER_IDS:
        message["userId"] = person.user_id
    if who in (ANON, USER_ANON):
        message["anonymousId"] = person.anonymous_id
    elif who in (MOBILE, USER_MOBILE):
        message["anonymousId"] = person.mobile_id
    if who in (MOBILE, USER_MOBILE):
        context: dict[str, Any] = {**person.mobile_context, "ip": person.ip}
    elif source == "web":
        context = dict(person.web_context)
    elif source == "email":
        context = dict(_ESP)
    else:
        context = {**_SERVER, "ip": person.ip}
    message["context"] = context
    if kind == "page":
        _page(message, details, context)
    elif kind == "track":
        message["event"] = details["event"]
        message["properties"] = details["properties"]
    elif kind == "screen":
        message["name"] = details["name"]
        message["properties"] = details.get("properties", {})
    elif kind == "identify":
        message["traits"] = details["traits"]
    elif kind == "group":
        message["groupId"] = details["group_id"]
        message["traits"] = details["traits"]
    return message


def _page(message: dict[str, Any], details: dict[str, Any], context: dict[str, Any]) -> None:
    path: str = details["path"]
    title = t.PAGE_TITLES.get(path) or _title(path)
    search = ""
    campaign = details.get("campaign")
    if campaign is not None:
        name, source, medium = campaign
        search = f"?utm_source={source}&utm_medium={medium}&utm_campaign={name}"
        context["campaign"] = {"name": name, "source": source, "medium": medium}
    page = {"path": path, "referrer": details.get("referrer", ""), "search": search,
            "title": title, "url": t.SITE + path + search}
    context["page"] = page
    message["name"] = title
    message["properties"] = dict(page)


def _title(path: str) -> str:
    last = path.rstrip("/").rsplit("/", 1)[-1] or "home"
    words = " ".join(_WORDS.get(word, word) for word in last.replace("_", "-").split("-"))
    section = path.strip("/").split("/", 1)[0]
    prefix = {"blog": "Blog: ", "docs": "Docs: "}.get(section, "")
    return prefix + words[:1].upper() + words[1:]
