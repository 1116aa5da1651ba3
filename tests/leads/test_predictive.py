"""Predictive models: training finds a planted signal, calibration, the report, scoring with
explanations, versions, the promotion guard and rollback (both dialects)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from cadenza.clock import FakeClock
from cadenza.errors import Conflict, NotFound, ValidationFailed
from cadenza.leads.predictive_service import PredictiveService, PromotionRefused
from cadenza.store import Store, schema
from tests.leads.predictive_data import DAY, definition, generate


@pytest.fixture
def service(store: Store, clock: FakeClock) -> PredictiveService:
    """The service over the test store."""
    return PredictiveService(store, clock)


def _queued(store: Store, consumer: str) -> set[int]:
    c = schema.contact_changes
    with store.read() as conn:
        return {int(r[0]) for r in conn.execute(
            sa.select(c.c.contact_id).where(c.c.consumer == consumer))}


def test_training_finds_the_planted_signal(store: Store, clock: FakeClock,
                                           service: PredictiveService) -> None:
    world = generate(store, clock.now_ms(), contacts=1500)
    service.define(definition())
    version = service.train("buyers")
    m = version.metrics
    assert version.status == "candidate"
    assert version.version == 1
    assert m["auc"] > 0.72
    assert m["importances"][0]["feature"] == "count:Pricing Viewed:30d"
    assert m["importances"][0]["weight"] > 0
    # Calibrated: the mean prediction on the holdout is close to the conversion rate.
    # (the holdout has 300 rows: its own sampling noise is about 0.02)
    assert abs(m["mean_predicted"] - m["class_balance"]["rate"]) < 0.04, m
    filled = [row for row in m["calibration"] if row["count"]]
    gap = sum(row["count"] * abs(row["mean_predicted"] - row["observed"]) for row in filled)
    assert gap / m["rows"]["holdout"] < 0.07, m["calibration"]
    assert m["brier"] < m["base_rate"] * (1 - m["base_rate"])  # beats always-the-base-rate
    assert sum(row["count"] for row in m["calibration"]) == m["rows"]["holdout"]
    assert m["lift"][0]["lift"] > 1.8
    assert m["lift"][-1]["lift"] < 0.8
    assert m["class_balance"]["converted"] == len(world.converted)
    assert m["rows"] == {"total": 1500, "train": 1200, "holdout": 300}
    assert m["t0"] == clock.now_ms() - 30 * DAY


def test_training_is_deterministic(store: Store, clock: FakeClock,
                                   service: PredictiveService) -> None:
    generate(store, clock.now_ms(), contacts=600, base=-1.5)
    service.define(definition())
    first, second = service.train("buyers"), service.train("buyers")
    assert first.metrics["auc"] == second.metrics["auc"]
    assert first.metrics["importances"] == second.metrics["importances"]


def test_scoring_writes_scores_explanations_and_queues_changes(
        store: Store, clock: FakeClock, service: PredictiveService) -> None:
    generate(store, clock.now_ms(), contacts=800, base=-1.5)
    service.define(definition())
    service.promote("buyers", service.train("buyers").version)
    # Score as of the snapshot time, when the pricing views are recent.
    clock.set(clock.now_ms() - 30 * DAY + 1)
    run = service.score("buyers")
    assert run.contacts == 800
    assert run.changed == 800
    s = schema.contact_scores
    with store.read() as conn:
        rows = conn.execute(sa.select(s.c.contact_id, s.c.score, s.c.explanation)).all()
    assert len(rows) == 800
    for _, score, explanation in rows:
        assert 0 <= score <= 100
        assert explanation["version"] == 1
        assert score == pytest.approx(explanation["probability"] * 100, abs=0.01)
        assert len(explanation["top"]) == 5
        effects = [abs(effect) for _, _, effect in explanation["top"]]
        assert effects == sorted(effects, reverse=True)
    leaders = sorted(rows, key=lambda r: -r[1])[:20]
    assert all(r[2]["top"][0][0] == "count:Pricing Viewed:30d" for r in leaders)
    assert _queued(store, "segments") >= {r[0] for r in rows}
    assert _queued(store, "lifecycle") >= {r[0] for r in rows}
    with store.begin() as conn:
        conn.execute(sa.delete(schema.contact_changes))
    again = service.score("buyers")
    assert again.changed == 0
    assert again.written == 0  # nothing moved: no row rewritten
    assert not _queued(store, "segments")
    # On demand: every column, and the stored top five agree with it.
    contact = leaders[0][0]
    shown = service.explain("buyers", contact)
    assert shown["features"][0]["feature"] == "count:Pricing Viewed:30d"
    assert shown["probability"] == pytest.approx(leaders[0][1] / 100, abs=1e-4)
    assert shown["stored"]["explanation"]["top"][0][2] == pytest.approx(
        shown["features"][0]["effect"], abs=1e-3)
    with pytest.raises(NotFound):
        service.explain("buyers", 999_999)


def test_one_class_and_too_few_rows_are_refused(store: Store, clock: FakeClock,
                                                service: PredictiveService) -> None:
    generate(store, clock.now_ms(), contacts=150)
    service.define(definition())
    with pytest.raises(ValidationFailed, match=r"only 150 contacts.*at least 200"):
        service.train("buyers")
    generate(store, clock.now_ms(), contacts=400, start_id=151, seed=4)
    service.define(definition(outcome={"event": "Order Completed",
                                       "where": {"plan": "enterprise"}}))
    with pytest.raises(ValidationFailed, match="did not convert: one class only"):
        service.train("buyers")
    with store.begin() as conn:  # five conversions only
        conn.execute(sa.insert(schema.events), [{
            "message_id": f"demo{cid}", "contact_id": cid, "type": "track",
            "name": "Demo Requested", "properties": {}, "context": {}, "source": "test",
            "timestamp": clock.now_ms() - DAY, "received_at": clock.now_ms()}
            for cid in range(1, 6)])
    service.define(definition(outcome={"event": "Demo Requested"}))
    with pytest.raises(ValidationFailed, match=r"5 of 550 contacts converted.*at least 20"):
        service.train("buyers")
    with store.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(
            schema.model_versions)).scalar_one() == 0


def test_constant_feature_is_refused(store: Store, clock: FakeClock,
                                     service: PredictiveService) -> None:
    generate(store, clock.now_ms(), contacts=400, base=-1.5)
    with store.begin() as conn:  # an event that only ever happened after the snapshot
        conn.execute(sa.insert(schema.events).values(
            message_id="late", contact_id=1, type="track", name="Late Event", properties={},
            context={}, source="test", timestamp=clock.now_ms() - DAY,
            received_at=clock.now_ms()))
    features = [*definition()["features"], {"count": "Late Event", "windows": [7, 30]}]
    service.define(definition(features=features))
    with pytest.raises(ValidationFailed) as caught:
        service.train("buyers")
    assert caught.value.field == "features.6"
    assert "same (0, 0) for every training contact" in caught.value.reason


def test_unknown_names_are_refused_at_definition(store: Store, clock: FakeClock,
                                                 service: PredictiveService) -> None:
    generate(store, clock.now_ms(), contacts=50)
    with pytest.raises(ValidationFailed) as caught:
        service.define(definition(outcome={"event": "Order Complete"}))
    assert caught.value.field == "outcome.event"
    assert "did you mean 'Order Completed'" in caught.value.reason
    features = [{"count": "Pricing Viewd", "windows": [7]}]
    with pytest.raises(ValidationFailed, match="did you mean 'Pricing Viewed'") as caught:
        service.define(definition(features=features))
    assert caught.value.field == "features.0"
    with pytest.raises(ValidationFailed, match="'employes' is neither declared"):
        service.define(definition(features=[{"attr": "employes", "type": "number"}]))
    with store.begin() as conn:
        conn.execute(sa.insert(schema.score_models).values(
            key="fit", name="Fit", kind="rules", definition={}, status="active",
            created_at=0, updated_at=0))
    with pytest.raises(Conflict, match="is a rules model"):
        service.define(definition(key="fit"))
    with pytest.raises(NotFound):
        service.train("fit")


def test_guard_refuses_a_worse_model_and_accepts_a_better_one(
        store: Store, clock: FakeClock, service: PredictiveService) -> None:
    generate(store, clock.now_ms(), contacts=1500)
    service.define(definition())
    good = service.train("buyers")
    assert service.promote("buyers", good.version).status == "live"
    blind = [{"attr": "employees", "type": "number"}, {"attr": "plan", "type": "enum"}]
    service.define(definition(features=blind))
    worse = service.train("buyers")
    assert worse.metrics["compare"]["live_version"] == 1
    assert worse.metrics["compare"]["live_auc"] > worse.metrics["auc"] + 0.1
    with pytest.raises(PromotionRefused) as caught:
        service.promote("buyers", worse.version)
    message = caught.value.message
    assert f"{worse.metrics['auc']:.4f}" in message
    assert f"{worse.metrics['compare']['live_auc']:.4f}" in message
    assert "both on the candidate's holdout" in message
    statuses = {v.version: v.status for v in service.versions("buyers")}
    assert statuses == {1: "live", 2: "refused"}
    forced = service.promote("buyers", worse.version, force=True, note="testing")
    assert forced.status == "live"
    assert forced.note.startswith("forced over live version 1")
    assert forced.note.endswith(": testing")
    service.define(definition())
    better = service.train("buyers")
    assert better.metrics["compare"]["live_version"] == 2
    assert service.promote("buyers", better.version).status == "live"
    assert {v.version: v.status for v in service.versions("buyers")} == {
        1: "retired", 2: "retired", 3: "live"}
    with pytest.raises(Conflict, match="version 3 is live"):
        service.promote("buyers", 3)


def test_rollback(store: Store, clock: FakeClock, service: PredictiveService) -> None:
    generate(store, clock.now_ms(), contacts=600, base=-1.5)
    service.define(definition())
    for _ in range(2):
        number = service.train("buyers").version
        clock.advance(1000)
        service.promote("buyers", number, force=True)
    never = service.train("buyers").version
    with pytest.raises(Conflict, match="was never live"):
        service.rollback("buyers", never)
    back = service.rollback("buyers")
    assert back.version == 1
    assert back.status == "live"
    assert "from version 2" in back.note
    assert service.version("buyers").version == 1
    clock.advance(1000)
    assert service.rollback("buyers").version == 2  # the most recent earlier live one
    with pytest.raises(Conflict, match="already live"):
        service.rollback("buyers", 2)


def test_scoring_needs_a_live_version(store: Store, clock: FakeClock,
                                      service: PredictiveService) -> None:
    generate(store, clock.now_ms(), contacts=50)
    service.define(definition())
    with pytest.raises(Conflict, match="no live version"):
        service.score("buyers")
    with pytest.raises(NotFound, match="no version trained yet"):
        service.version("buyers")
