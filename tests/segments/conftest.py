"""Fixtures for the condition language: a factory that writes facts straight into the store."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from cadenza.store import Store, dumps, insert_rows, schema

NOW = 1_767_225_600_000


@dataclass
class Seed:
    """Rows to write in one transaction (bulk inserts, so thousands of contacts are cheap)."""

    store: Store
    contacts: list[tuple[Any, ...]] = field(default_factory=list)
    events: list[tuple[Any, ...]] = field(default_factory=list)
    consents: list[tuple[Any, ...]] = field(default_factory=list)
    tags: list[tuple[Any, ...]] = field(default_factory=list)
    _messages: Iterator[int] = field(default_factory=itertools.count)

    def contact(self, cid: int, attributes: dict[str, Any] | None = None, *,
                email: str | None = None, phone: str | None = None,
                user_id: str | None = None, timezone: str | None = None,
                locale: str | None = None) -> int:
        self.contacts.append((cid, email, phone, user_id, dumps(attributes or {}), timezone,
                              locale, NOW, NOW))
        return cid

    def event(self, cid: int, name: str, at: int) -> None:
        message = f"m{next(self._messages)}"
        self.events.append((message, cid, "track", name, "{}", "{}", "test", at, at))

    def consent(self, cid: int, channel: str, purpose: str, status: str) -> None:
        self.consents.append((cid, channel, purpose, status, "test", NOW))

    def tag(self, cid: int, tag: str) -> None:
        self.tags.append((cid, tag, NOW))

    def write(self) -> None:
        with self.store.begin() as conn:
            insert_rows(conn, schema.contacts, ("id", "email", "phone", "user_id", "attributes",
                                                "timezone", "locale", "created_at",
                                                "updated_at"), self.contacts)
            insert_rows(conn, schema.events, ("message_id", "contact_id", "type", "name",
                                              "properties", "context", "source", "timestamp",
                                              "received_at"), self.events)
            insert_rows(conn, schema.consents, ("contact_id", "channel", "purpose", "status",
                                                "source", "updated_at"), self.consents)
            insert_rows(conn, schema.contact_tags, ("contact_id", "tag", "created_at"),
                        self.tags)
        self.contacts, self.events, self.consents, self.tags = [], [], [], []


@pytest.fixture
def seed(store: Store) -> Seed:
    """Collects rows; `seed.write()` stores them."""
    return Seed(store)
