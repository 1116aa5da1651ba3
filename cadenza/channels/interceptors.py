"""The interceptor chain around delivery: cross-cutting rules applied to every batch.

An interceptor sees the batch of messages about to be delivered, decides outcomes for some
(shadowed, cancelled) and passes the rest on with `proceed`; the end of the chain delivers.
Working on the whole batch lets a rule check its facts in one query (the suppression list
once per batch, not once per message). Order matters and is explicit:

    ShadowInterceptor -> SuppressionInterceptor -> deliver

Consent, frequency caps, quiet hours and rate limits join the chain the same way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Protocol

from cadenza.channels.models import Message, Outcome
from cadenza.contacts import is_suppressed
from cadenza.store import Store

Outcomes = dict[int, Outcome]
"""Outcomes by outbox row id."""
Proceed = Callable[[Sequence[Message]], Awaitable[Outcomes]]


class Interceptor(Protocol):
    """One link of the chain."""

    async def intercept(self, messages: Sequence[Message], proceed: Proceed) -> Outcomes:
        """Decide some outcomes, `proceed` with the rest, return every message's outcome."""
        ...


def build_chain(interceptors: Sequence[Interceptor], deliver: Proceed) -> Proceed:
    """`deliver` wrapped by `interceptors`, the first outermost."""
    proceed = deliver
    for interceptor in reversed(interceptors):
        proceed = _link(interceptor, proceed)
    return proceed


def _link(interceptor: Interceptor, proceed: Proceed) -> Proceed:
    async def call(messages: Sequence[Message]) -> Outcomes:
        if not messages:
            return {}
        return await interceptor.intercept(messages, proceed)

    return call


class ShadowInterceptor:
    """Shadow messages are rendered and recorded, and never go further."""

    async def intercept(self, messages: Sequence[Message], proceed: Proceed) -> Outcomes:
        """Stop shadow messages here."""
        outcomes: Outcomes = {m.outbox_id: Outcome.shadowed() for m in messages if m.shadow}
        outcomes.update(await proceed([m for m in messages if not m.shadow]))
        return outcomes


class SuppressionInterceptor:
    """Cancels messages to suppressed addresses, checked at send time in one query per
    address kind."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def intercept(self, messages: Sequence[Message], proceed: Proceed) -> Outcomes:
        """Cancel what goes to a suppressed address; proceed with the rest."""
        wanted: dict[str, set[str]] = {}
        for m in messages:
            if m.address_kind and m.address:
                wanted.setdefault(m.address_kind, set()).add(m.address)
        hits = await asyncio.to_thread(self._lookup, wanted) if wanted else {}
        outcomes: Outcomes = {}
        passing: list[Message] = []
        for m in messages:
            if m.address_kind and m.address in hits.get(m.address_kind, ()):
                outcomes[m.outbox_id] = Outcome.cancelled(
                    f"suppressed: the {m.address_kind} address is on the suppression list")
            else:
                passing.append(m)
        outcomes.update(await proceed(passing))
        return outcomes

    def _lookup(self, wanted: Mapping[str, set[str]]) -> dict[str, set[str]]:
        with self.store.read() as conn:
            return {kind: is_suppressed(conn, kind, sorted(addresses))
                    for kind, addresses in wanted.items()}


def default_interceptors(store: Store) -> list[Interceptor]:
    """The standard chain: shadow first (nothing of a shadow run is delivered), then the
    suppression list."""
    return [ShadowInterceptor(), SuppressionInterceptor(store)]
