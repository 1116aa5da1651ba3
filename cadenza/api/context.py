"""What every route needs, built once per app from the settings."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from cadenza.clock import Clock
from cadenza.contacts import ContactService
from cadenza.events import BatchingWriter, EventService
from cadenza.governance import KeyChecker
from cadenza.settings import Settings
from cadenza.store import Store


@dataclass
class AppContext:
    """Services shared by the routes of one app."""

    settings: Settings
    store: Store
    clock: Clock
    events: EventService
    contacts: ContactService
    keys: KeyChecker
    writer: BatchingWriter


def context(request: Request) -> AppContext:
    """The app's context (a FastAPI dependency)."""
    ctx: AppContext = request.app.state.cadenza
    return ctx
