"""What every route needs, built once per app from the settings."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from fastapi import Request

from cadenza.channels import OutboxService, TemplateService
from cadenza.clock import Clock
from cadenza.contacts import ContactService
from cadenza.engine import Engine, EngineRunner
from cadenza.events import BatchingWriter, EventService
from cadenza.governance import KeyChecker
from cadenza.journeys import JourneyService
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
    journeys: JourneyService
    runner: EngineRunner | None = None
    """The engine thread of this process (None when the settings turn it off)."""

    @cached_property
    def engine(self) -> Engine:
        """The engine, for API entries (works with or without the runner thread)."""
        return self.runner.engine if self.runner is not None else Engine(self.store, self.clock)

    @cached_property
    def outbox(self) -> OutboxService:
        """Outbox rows: list, inspect, replay."""
        return OutboxService(self.store, self.clock)

    @cached_property
    def templates(self) -> TemplateService:
        """Message templates (render time limit from the settings)."""
        return TemplateService.from_settings(self.store, self.clock, self.settings)


def context(request: Request) -> AppContext:
    """The app's context (a FastAPI dependency)."""
    ctx: AppContext = request.app.state.cadenza
    return ctx
