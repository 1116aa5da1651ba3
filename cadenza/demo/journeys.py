"""The demo's journeys: onboarding, lead nurture, abandoned cart and win-back, published once.

The journey files (`cadenza/demo/journeys/*.yaml`) and their templates
(`cadenza/demo/templates.yaml`) ship inside the package. `setup_journeys` declares the fields
they need, saves the templates and publishes each journey whose live version differs from its
file, so running it again changes nothing, and a newer Cadenza publishes a new version.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml

from cadenza.channels import TemplateService
from cadenza.clock import Clock
from cadenza.contacts import FieldSpec, declare_field, list_fields
from cadenza.engine import journey_stats
from cadenza.errors import NotFound
from cadenza.journeys import (
    ApiTrigger,
    AttributeTrigger,
    EventTrigger,
    JourneyService,
    compile_definition,
    content_hash,
    load_journey,
)
from cadenza.store import Store

CHANNEL = "log"
"""Demo journeys send through the log channel: the demo has no mail server."""

JOURNEYS = ("trial-onboarding", "lead-nurture", "abandoned-cart", "win-back")
"""The demo journeys, by key (each is `journeys/<key>.yaml`)."""

FIELDS = (
    FieldSpec("lead_score", "number",
              description="Interest shown by a lead who has not signed up (0-100)"),
)
"""Fields the journeys' conditions use beyond those the generator declares."""


@dataclass(frozen=True)
class DemoJourney:
    """A demo journey after `setup_journeys`."""

    key: str
    name: str
    version: int | None
    """The live version (None when the journey was archived by hand)."""
    published: bool
    """Whether this setup published a version (False: the live one already matched)."""
    entry: str
    """When contacts enter, in a few words ("on 'Signed Up'")."""


def journey_files() -> dict[str, str]:
    """The text of each demo journey file, by key."""
    folder = resources.files("cadenza.demo").joinpath("journeys")
    return {key: folder.joinpath(f"{key}.yaml").read_text(encoding="utf-8")
            for key in JOURNEYS}


def demo_templates() -> dict[str, dict[str, str]]:
    """The templates of the demo journeys: key -> {subject, body}."""
    text = resources.files("cadenza.demo").joinpath("templates.yaml").read_text(
        encoding="utf-8")
    loaded: dict[str, dict[str, str]] = yaml.safe_load(text)
    return loaded


def setup_journeys(store: Store, clock: Clock) -> list[DemoJourney]:
    """Declare the fields, save the templates and publish the demo journeys (idempotent)."""
    with store.begin() as conn:
        declared = {f.name for f in list_fields(conn)}
        for spec in FIELDS:
            if spec.name not in declared:
                declare_field(conn, spec, clock.now_ms())
    templates = TemplateService(store, clock)
    stored = {t.key: t for t in templates.all()}
    for key, parts in demo_templates().items():
        have = stored.get(key)
        if have is None or (have.channel, have.subject, have.body) != \
                (CHANNEL, parts["subject"], parts["body"]):
            templates.save(key, CHANNEL, parts["subject"], parts["body"])
    service = JourneyService(store, clock)
    existing = {j.key: j for j in service.list()}
    done = []
    for key, text in journey_files().items():
        definition = load_journey(text)
        journey = existing.get(key)
        published = False
        if journey is None or (journey.status != "archived"
                               and _live_hash(service, key, journey.live_version)
                               != content_hash(definition)):
            service.save_draft(definition)
            service.publish(key)
            published = True
        current = service.get(key)
        done.append(DemoJourney(key, current.name, current.live_version, published,
                                _entry(definition)))
    return done


def _live_hash(service: JourneyService, key: str, live: int | None) -> str | None:
    return service.version(key, live).content_hash if live is not None else None


def _entry(definition: dict[str, Any]) -> str:
    """When contacts enter, from the journey's triggers ("on 'Signed Up'")."""
    said = []
    for trigger in compile_definition(definition).triggers:
        if isinstance(trigger, EventTrigger):
            said.append(f"on {trigger.event!r}")
        elif isinstance(trigger, AttributeTrigger):
            said.append(f"when {trigger.attr} is set")
        elif isinstance(trigger, ApiTrigger):
            said.append("through the API")
    return " or ".join(said)


def enrollment_counts(store: Store) -> dict[str, int]:
    """How many contacts have entered each demo journey so far (every status)."""
    counts = {}
    with store.read() as conn:
        for key in JOURNEYS:
            try:
                stats = journey_stats(conn, key)
            except NotFound:  # not set up in this workspace
                continue
            counts[key] = sum(sum(v["enrollments"].values()) for v in stats["versions"]
                              if not v["shadow"])
    return counts
