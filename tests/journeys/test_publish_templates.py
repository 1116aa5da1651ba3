"""Publishing renders every message a journey can send for a sample of real contacts (real
entry events when the journey is entered by an event), or fails naming the step, the
template, the contact and the error."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from cadenza.channels.endpoints import EndpointService
from cadenza.channels.ssrf import SsrfGuard, parse_networks
from cadenza.channels.templates import TemplateService
from cadenza.clock import FakeClock
from cadenza.journeys import JourneyInvalid, JourneyService
from cadenza.store import Store, schema
from tests.api.conftest import Keys
from tests.api.support import Api
from tests.channels.support import add_contact
from tests.journeys.conftest import minimal


@pytest.fixture
def saved(store: Store, clock: FakeClock) -> TemplateService:
    """welcome (needs attribute first_name) and nudge (needs entry.plan)."""
    service = TemplateService(store, clock)
    service.save("welcome", "email", "Hi {{ contact.attributes.first_name }}", "<p>Welcome</p>")
    service.save("nudge", "email", "About {{ entry.plan }}", "<p>Still {{ entry.plan }}?</p>")
    return service


def add_event(store: Store, clock: FakeClock, contact: int, name: str,
              properties: dict[str, Any]) -> int:
    e = schema.events
    with store.begin() as conn:
        return int(conn.execute(sa.insert(e).values(
            message_id=f"m-{contact}-{clock.now_ms()}", contact_id=contact, type="track",
            name=name, properties=properties, context={}, source="api",
            timestamp=clock.now_ms(), received_at=clock.now_ms()).returning(e.c.id)
        ).scalar_one())


def publish(journeys: JourneyService, definition: dict[str, Any]) -> None:
    journeys.save_draft(definition)
    journeys.publish(definition["journey"])


def test_publish_fails_naming_step_template_contact_and_error(
        journeys: JourneyService, saved: TemplateService, store: Store,
        clock: FakeClock) -> None:
    add_contact(store, clock.now_ms(), attributes={"first_name": "Ann"})
    clock.advance(1000)
    missing = add_contact(store, clock.now_ms(), attributes={"plan": "pro"})
    journeys.save_draft(minimal())
    with pytest.raises(JourneyInvalid) as caught:
        journeys.publish("welcome-flow")
    problem = caught.value.problems[0]
    assert problem.step == "welcome"
    assert problem.field == "template"
    assert f"contact {missing}" in problem.reason
    assert "'welcome'" in problem.reason
    assert "first_name" in problem.reason
    assert caught.value.message.startswith("journey 'welcome-flow', step 'welcome'")
    assert journeys.get("welcome-flow").status == "draft"  # nothing was published


def test_publish_passes_when_every_sample_renders(journeys: JourneyService,
                                                 saved: TemplateService, store: Store,
                                                 clock: FakeClock) -> None:
    for n in range(3):
        add_contact(store, clock.now_ms(), attributes={"first_name": f"N{n}"})
    publish(journeys, minimal())  # nudge's entry.plan: no real events, any entry key is fine
    assert journeys.get("welcome-flow").status == "live"


def test_real_entry_events_are_the_entries(journeys: JourneyService, saved: TemplateService,
                                           store: Store, clock: FakeClock) -> None:
    ann = add_contact(store, clock.now_ms(), attributes={"first_name": "Ann"})
    add_event(store, clock, ann, "signed_up", {"plan": "pro"})
    publish(journeys, minimal())
    clock.advance(1000)
    bo = add_contact(store, clock.now_ms(), attributes={"first_name": "Bo"})
    event = add_event(store, clock, bo, "signed_up", {"source": "ad"})
    with pytest.raises(JourneyInvalid) as caught:
        publish(journeys, minimal(name="v2"))
    problem = caught.value.problems[0]
    assert problem.step == "nudge"
    assert f"contact {bo} (event {event})" in problem.reason
    assert "'plan'" in problem.reason


def test_inline_subjects_and_bodies_are_checked(journeys: JourneyService, store: Store,
                                                clock: FakeClock) -> None:
    add_contact(store, clock.now_ms(), attributes={})
    definition = minimal(steps=[{"id": "ping", "send": {
        "channel": "email", "subject": "Hi", "body": "{{ contact.attributes.x }}"}}])
    with pytest.raises(JourneyInvalid) as caught:
        publish(journeys, definition)
    assert caught.value.problems[0].step == "ping"
    assert caught.value.problems[0].field == "params"


def test_the_sample_is_the_most_recent_contacts(store: Store, clock: FakeClock,
                                                saved: TemplateService) -> None:
    add_contact(store, clock.now_ms(), attributes={})  # old, would fail
    for n in range(2):
        clock.advance(1000)
        add_contact(store, clock.now_ms(), attributes={"first_name": f"N{n}"})
    publish(JourneyService(store, clock, publish_sample_contacts=2), minimal())


def test_zero_turns_the_check_off(store: Store, clock: FakeClock,
                                  saved: TemplateService) -> None:
    add_contact(store, clock.now_ms(), attributes={})
    publish(JourneyService(store, clock, publish_sample_contacts=0), minimal())


def test_the_api_answers_400_with_the_problem(client: httpx.Client, keys: Keys,
                                              saved: TemplateService, store: Store,
                                              clock: FakeClock) -> None:
    api = Api(client, keys.write, keys.admin)
    contact = add_contact(store, clock.now_ms(), attributes={})
    saved_draft = api.client.post("/api/journeys", json=minimal(),
                                  headers=api.admin_headers)
    assert saved_draft.status_code in (200, 201), saved_draft.text
    published = api.post("/journeys/welcome-flow/publish", {})
    assert published.status_code == 400, published.text
    error = published.json()["error"]
    assert error["code"] == "journey.invalid"
    assert f"contact {contact}" in error["message"]


def test_a_webhook_step_must_name_a_saved_endpoint(journeys: JourneyService, store: Store,
                                                   clock: FakeClock) -> None:
    definition = minimal(steps=[{"id": "sync", "send": {
        "channel": "webhook", "endpoint": "crm-sync"}}])
    with pytest.raises(JourneyInvalid) as caught:
        publish(journeys, definition)
    problem = caught.value.problems[0]
    assert (problem.step, problem.field) == ("sync", "params.endpoint")
    assert "'crm-sync' names no saved webhook endpoint" in problem.reason
    endpoints = EndpointService(store, clock,
                                guard=SsrfGuard(parse_networks(["127.0.0.0/8"])))
    asyncio.run(endpoints.save("crm-sync", "http://127.0.0.1:9/hook"))
    publish(journeys, definition)
    assert journeys.get("welcome-flow").status == "live"
