"""Scheduled retraining with a fake clock: due models retrain, promote only through the
guard, rescore; every outcome is recorded."""

from __future__ import annotations

import sqlalchemy as sa

from cadenza.clock import FakeClock
from cadenza.engine.listeners import listeners_from_settings, run_due_jobs
from cadenza.leads.predictive import RetrainJob, predictive_jobs
from cadenza.leads.predictive_service import PredictiveService
from cadenza.settings import Settings
from cadenza.store import Store, schema
from tests.leads.predictive_data import DAY, definition, generate

HOUR = 3_600_000
SECRET = "predictive-job-test-secret-0123456789-abcdef"


def _job() -> RetrainJob:
    jobs = predictive_jobs(Settings.load(secret_key=SECRET, model_retrain_check_s=600))
    assert len(jobs) == 1
    assert isinstance(jobs[0], RetrainJob)
    assert jobs[0].interval_ms == 600_000
    return jobs[0]


def test_jobs_follow_settings() -> None:
    assert predictive_jobs(Settings.load(secret_key=SECRET, model_retrain_check_s=0)) == []
    _, jobs = listeners_from_settings(Settings.load(secret_key=SECRET))
    assert "predictive-retrain" in [job.name for job in jobs]


def test_scheduled_retraining(store: Store, clock: FakeClock) -> None:
    generate(store, clock.now_ms(), contacts=800, base=-1.5)
    service = PredictiveService(store, clock)
    service.define(definition(schedule={"retrain_every_days": 7, "rescore_every_hours": 24}))
    job = _job()
    assert run_due_jobs(store, [job], clock.now_ms()) == ["predictive-retrain"]
    first = service.versions("buyers")
    assert [(v.version, v.status, v.note) for v in first] == [
        (1, "live", "scheduled retraining")]
    with store.read() as conn:
        scored = conn.execute(sa.select(sa.func.count()).select_from(
            schema.contact_scores)).scalar_one()
    assert scored == 800

    clock.advance(HOUR)  # nothing is due: no training, no rescoring
    assert job.run(store, clock.now_ms()) == []

    clock.advance(25 * HOUR)  # the rescore interval passed
    assert [o["outcome"] for o in job.run(store, clock.now_ms())] == ["scored"]
    assert service.get("buyers")["scored_at"] == clock.now_ms()

    clock.advance(7 * DAY)  # retraining is due: a new version goes through the guard
    outcomes = job.run(store, clock.now_ms())
    assert outcomes[0]["version"] == 2
    second = service.versions("buyers")[0]
    if outcomes[0]["outcome"] == "promoted":
        assert second.status == "live"
        assert outcomes[1]["outcome"] == "scored"
    else:
        assert outcomes[0]["outcome"] == "refused"
        assert second.status == "refused"
        assert "AUC" in second.note
        assert "AUC" in outcomes[0]["reason"]


def test_a_refused_retraining_is_recorded(store: Store, clock: FakeClock) -> None:
    generate(store, clock.now_ms(), contacts=1500)
    service = PredictiveService(store, clock)
    service.define(definition())
    service.promote("buyers", service.train("buyers").version)
    blind = [{"attr": "employees", "type": "number"}, {"attr": "plan", "type": "enum"}]
    service.define(definition(features=blind, schedule={"retrain_every_days": 1}))
    clock.advance(DAY)
    outcomes = _job().run(store, clock.now_ms())
    assert [(o["outcome"], o["version"]) for o in outcomes] == [("refused", 2)]
    assert "worse than live version 1" in outcomes[0]["reason"]
    assert {v.version: v.status for v in service.versions("buyers")} == {
        1: "live", 2: "refused"}


def test_a_failed_training_is_recorded_once(store: Store, clock: FakeClock) -> None:
    generate(store, clock.now_ms(), contacts=100)
    service = PredictiveService(store, clock)
    service.define(definition(schedule={"retrain_every_days": 7}))
    job = _job()
    outcomes = job.run(store, clock.now_ms())
    assert outcomes[0]["outcome"] == "training failed"
    assert "at least 200" in outcomes[0]["reason"]
    clock.advance(DAY)
    assert job.run(store, clock.now_ms()) == []  # not retried before the next period
    (failed,) = service.versions("buyers")
    assert failed.status == "refused"
    assert failed.note.startswith("scheduled training failed")
