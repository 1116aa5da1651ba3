"""The demo journeys: valid files, published on a demo workspace, set up again idempotently."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from cadenza.channels import TemplateService
from cadenza.clock import FakeClock
from cadenza.contacts import list_fields
from cadenza.demo import DemoSummary, generate_demo, setup_journeys
from cadenza.demo import journeys as demo_journeys
from cadenza.journeys import JourneyService, compile_definition, load_journey
from cadenza.store import Store, schema

SMALL: dict[str, int] = {"contacts": 300, "days": 14, "seed": 11}
ENTRIES: dict[str, dict[str, Any]] = {
    "onboarding": {"method": "invite", "plan": "pro"},
    "nurture": {"lead_score": 20},
    "cart": {"order_id": "ord_0001", "value": 120.0, "revenue": 120.0, "currency": "USD",
             "products": [{"product_id": "plan_pro", "name": "Pro plan", "price": 24,
                           "quantity": 5}]},
    "winback": {"plan": "pro", "reason": "too expensive"},
}


@pytest.fixture
def demo(store: Store, clock: FakeClock) -> DemoSummary:
    """A small demo workspace in the test store."""
    return generate_demo(store, clock, **SMALL)


def test_journey_files_are_valid_on_their_own() -> None:
    files = demo_journeys.journey_files()
    assert set(files) == set(demo_journeys.JOURNEYS)
    templates = demo_journeys.demo_templates()
    for key, text in files.items():
        spec = compile_definition(load_journey(text))
        assert spec.key == key
        for step in spec.steps.values():
            template = getattr(step, "template", None)
            if template is not None:
                assert template in templates, f"{key}: {template} has no template"
                assert getattr(step, "channel", None) == demo_journeys.CHANNEL


def test_journeys_publish_on_a_fresh_demo_store(demo: DemoSummary, store: Store,
                                                clock: FakeClock) -> None:
    done = setup_journeys(store, clock)
    assert [j.key for j in done] == list(demo_journeys.JOURNEYS)
    assert all(j.published and j.version == 1 for j in done)
    service = JourneyService(store, clock)
    assert {j.key: j.status for j in service.list()} == dict.fromkeys(
        demo_journeys.JOURNEYS, "live")
    saved = {t.key: t.channel for t in TemplateService(store, clock).all()}
    assert saved == dict.fromkeys(demo_journeys.demo_templates(), "log")
    with store.read() as conn:
        assert "lead_score" in {f.name for f in list_fields(conn)}
    entries = {j.key: j.entry for j in done}
    assert entries["abandoned-cart"] == "on 'Checkout Started'"
    assert entries["lead-nurture"] == "when lead_score is set or through the API"


def test_setting_up_again_changes_nothing(demo: DemoSummary, store: Store,
                                          clock: FakeClock) -> None:
    setup_journeys(store, clock)
    before = _snapshot(store)
    clock.advance(60_000)
    again = setup_journeys(store, clock)
    assert not any(j.published for j in again)
    assert [j.version for j in again] == [1, 1, 1, 1]
    assert _snapshot(store) == before


def test_a_changed_journey_file_becomes_a_new_version(demo: DemoSummary, store: Store,
                                                      clock: FakeClock,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    setup_journeys(store, clock)
    files = demo_journeys.journey_files()
    files["win-back"] = files["win-back"].replace("wait: 7d", "wait: 5d")
    monkeypatch.setattr(demo_journeys, "journey_files", lambda: files)
    again = {j.key: j for j in setup_journeys(store, clock)}
    assert again["win-back"].published
    assert again["win-back"].version == 2
    assert not again["trial-onboarding"].published
    assert len(JourneyService(store, clock).versions("win-back")) == 2


def test_every_template_renders_for_a_demo_contact(demo: DemoSummary, store: Store,
                                                   clock: FakeClock) -> None:
    setup_journeys(store, clock)
    c = schema.contacts
    with store.read() as conn:
        contact_id = conn.execute(sa.select(sa.func.min(c.c.id))
                                  .where(c.c.user_id.is_not(None))).scalar_one()
    service = TemplateService(store, clock)
    for key in demo_journeys.demo_templates():
        rendered = service.preview(key, contact_id, ENTRIES.get(key.split("-", 1)[0], {}))
        assert rendered["subject"].strip()
        assert rendered["body"].strip()
    cart = service.preview("cart-discount", contact_id, ENTRIES["cart"])
    assert "108.00 USD instead of 120.00" in " ".join(cart["body"].split())


def _snapshot(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    tables = {"journeys": schema.journeys, "versions": schema.journey_versions,
              "templates": schema.templates, "fields": schema.fields}
    with store.read() as conn:
        return {name: sorted(tuple(r) for r in conn.execute(sa.select(table)))
                for name, table in tables.items()}
