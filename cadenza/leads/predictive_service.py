"""Predictive models as use cases: define, train, report, promote through the guard, roll
back, score every contact, explain one score, and the scheduled round.

Versions move candidate -> live (promoted) or refused; promoting one retires the live one;
a rollback brings a retired version back. The guard: a candidate whose holdout AUC is lower
than the live version's by more than `tolerance` (0.005 by default) is refused, naming both
AUCs, unless forced (the force is recorded in the version's note). Both AUCs are measured on
the candidate's holdout when the live version was live at training time (the usual case);
otherwise each version's own holdout AUC is compared, and the refusal says so.
"""

from __future__ import annotations

import difflib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from cadenza.clock import Clock
from cadenza.errors import Conflict, NotFound, ValidationFailed
from cadenza.leads import predictive_queries as q
from cadenza.leads.explain import explain_row, explanation_texts
from cadenza.leads.features import BUILTIN_COLUMNS, gc_paused, labels, snapshot
from cadenza.leads.predictive import ModelSpec, parse_model
from cadenza.leads.training import FittedModel, auc, fit
from cadenza.store import Store, schema
from cadenza.store.changes import mark_changed

MEANINGFUL_POINTS = 1.0
"""A score that moves by at least this many points (of 100) queues the contact for segments
and lifecycle rules."""
CHANGE_CONSUMERS = ("segments", "lifecycle")
Progress = Callable[[str], None]


class PromotionRefused(Conflict):
    """The guard refused a candidate worse than the live version."""

    code = "model.promotion_refused"

    def __init__(self, model: str, candidate: int, candidate_auc: float, live: int,
                 live_auc: float, basis: str, tolerance: float) -> None:
        super().__init__(
            f"model {model!r}: version {candidate} has holdout AUC {candidate_auc:.4f}, "
            f"worse than live version {live}'s {live_auc:.4f} ({basis}) by more than the "
            f"tolerance {tolerance:g}; it was not promoted. Promote it anyway with force "
            "(--force), or improve its features")
        self.model = model
        self.candidate = candidate
        self.candidate_auc = candidate_auc
        self.live = live
        self.live_auc = live_auc

    def context(self) -> dict[str, object]:
        return {"model": self.model, "candidate": self.candidate,
                "candidate_auc": self.candidate_auc, "live": self.live,
                "live_auc": self.live_auc}


@dataclass(frozen=True)
class ScoreRun:
    """What one scoring round did."""

    model: str
    version: int
    contacts: int
    written: int
    """Rows written: new, changed by 0.01 or more, or scored by another version before."""
    changed: int
    """Contacts queued for segments and lifecycle (moved by `MEANINGFUL_POINTS` or new)."""
    mean_probability: float
    seconds: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"model": self.model, "version": self.version, "contacts": self.contacts,
                "written": self.written, "changed": self.changed,
                "mean_probability": self.mean_probability, "seconds": self.seconds}


def model_dict(model: q.ModelRow, live: q.VersionRow | None) -> dict[str, Any]:
    """A model with its live version's headline figures."""
    return {"key": model.key, "name": model.name, "definition": model.definition,
            "created_at": model.created_at, "updated_at": model.updated_at,
            "scored_at": model.scored_at,
            "live": live.to_dict(full=False) if live else None}


class PredictiveService:
    """Define, train, promote, roll back, score and explain predictive models."""

    def __init__(self, store: Store, clock: Clock, *, tolerance: float = 0.005) -> None:
        self.store = store
        self.clock = clock
        self.tolerance = tolerance

    # --- definitions ---------------------------------------------------------------------

    def define(self, document: Any, key: str | None = None) -> tuple[dict[str, Any], bool]:
        """Create or replace a model's definition; (model, created). Refuses unknown events
        and attributes, and a key used by a rule or matrix model."""
        spec = parse_model(document, key)
        now = self.clock.now_ms()
        with self.store.begin() as conn:
            self._check_references(conn, spec)
            found = q.model_by_key(conn, spec.key)
            if found is not None and found.kind != q.KIND:
                raise Conflict(f"score model {spec.key!r} is a {found.kind} model; choose "
                               "another key for the predictive model")
            if found is None:
                q.insert_model(conn, spec.key, spec.name, spec.to_json(), now)
            else:
                q.update_model(conn, found.id, spec.name, spec.to_json(), now)
            model = self._model(conn, spec.key)
            return model_dict(model, q.live_version(conn, model.id)), found is None

    def models(self) -> list[dict[str, Any]]:
        """Every predictive model with its live version's AUC."""
        with self.store.read() as conn:
            return [model_dict(m, q.live_version(conn, m.id)) for m in q.predictive_models(conn)]

    def get(self, key: str) -> dict[str, Any]:
        """One model with its live version's headline figures."""
        with self.store.read() as conn:
            model = self._model(conn, key)
            return model_dict(model, q.live_version(conn, model.id))

    def versions(self, key: str) -> list[q.VersionRow]:
        """Every version, newest first."""
        with self.store.read() as conn:
            return q.versions(conn, self._model(conn, key).id)

    def version(self, key: str, number: int | None = None) -> q.VersionRow:
        """One version (the live one, else the newest, when `number` is None)."""
        with self.store.read() as conn:
            model = self._model(conn, key)
            if number is not None:
                return self._version(conn, model, number)
            found = q.live_version(conn, model.id) or next(iter(q.versions(conn, model.id)),
                                                           None)
            if found is None:
                raise NotFound("model version", f"{key} (no version trained yet; run "
                               f"`cadenza models train {key}`)")
            return found

    # --- training ------------------------------------------------------------------------

    def train(self, key: str, progress: Progress | None = None) -> q.VersionRow:
        """Train a candidate on the snapshot `horizon_days` ago; it is not live until
        promoted."""
        say = progress or (lambda _: None)
        now = self.clock.now_ms()
        with self.store.read() as conn:
            model = self._model(conn, key)
            spec = parse_model(model.definition)
            self._check_references(conn, spec)
            live = q.live_version(conn, model.id)
            t0 = now - spec.horizon_ms
            say("features")
            started = time.perf_counter()
            snap = snapshot(conn, spec.features, t0, created_before=t0)
            positives = labels(conn, spec.outcome, t0, now)
            features_s = time.perf_counter() - started
            y = np.isin(snap.ids, positives).astype(np.int64)
            say("fit")
            result = fit(spec.features, snap.raw, y, spec.seed)
            if live is not None:
                say("compare")
                result.metrics["compare"] = self._compare(conn, live, spec, snap, result)
        metrics = {**result.metrics, "t0": t0, "horizon_days": spec.horizon_days}
        metrics["timings"]["features_s"] = round(features_s, 3)
        with self.store.begin() as conn:
            number = q.insert_version(conn, model.id, spec.to_json(), metrics,
                                      result.model.to_artifact(), len(y), now)
            return self._version(conn, model, number)

    def _compare(self, conn: Connection, live: q.VersionRow, spec: ModelSpec, snap: Any,
                 result: Any) -> dict[str, Any]:
        """The live version's AUC on this candidate's holdout (same rows, same labels)."""
        live_spec = parse_model(live.spec)
        live_model = FittedModel.from_artifact(q.artifact(conn, live.id), live_spec.features)
        holdout = result.holdout
        if all(f.label in snap.raw for f in live_spec.features) and \
                set(live_spec.features) <= set(spec.features):
            raw = {f.label: snap.raw[f.label][holdout] for f in live_spec.features}
        else:
            ids = snap.ids[holdout].tolist()
            other = snapshot(conn, live_spec.features, snap.ref_ms, ids=ids)
            position = np.searchsorted(other.ids, snap.ids[holdout])
            raw = {label: values[position] for label, values in other.raw.items()}
        predicted = live_model.predict(live_model.encoder.transform(raw))
        return {"live_version": live.version,
                "live_auc": round(auc(result.y[holdout], predicted), 6)}

    # --- promotion and rollback ----------------------------------------------------------

    def promote(self, key: str, number: int, *, force: bool = False,
                note: str = "") -> q.VersionRow:
        """Make a candidate live through the guard (see the module docstring)."""
        now = self.clock.now_ms()
        refusal: PromotionRefused | None = None
        with self.store.begin() as conn:
            model = self._model(conn, key)
            candidate = self._version(conn, model, number)
            if candidate.status not in ("candidate", "refused"):
                hint = (" use rollback to bring a retired version back" if
                        candidate.status == "retired" else "")
                raise Conflict(f"model {key!r}: version {number} is {candidate.status}, not a "
                               f"candidate;{hint or ' nothing to do'}")
            if "auc" not in candidate.metrics:
                raise Conflict(f"model {key!r}: version {number} has no trained model "
                               f"({candidate.note}); train a new one")
            live = q.live_version(conn, model.id)
            text = note
            if live is not None:
                cand_auc = float(candidate.metrics["auc"])
                compare = candidate.metrics.get("compare") or {}
                if compare.get("live_version") == live.version:
                    live_auc, basis = float(compare["live_auc"]), "both on the candidate's " \
                        "holdout"
                else:
                    live_auc, basis = float(live.metrics["auc"]), "each on its own holdout"
                if cand_auc < live_auc - self.tolerance:
                    refusal = PromotionRefused(key, number, cand_auc, live.version, live_auc,
                                               basis, self.tolerance)
                    if not force:
                        q.set_status(conn, candidate.id, "refused", note=refusal.message)
                    else:
                        text = (f"forced over live version {live.version} (AUC "
                                f"{cand_auc:.4f} < {live_auc:.4f}, {basis})"
                                + (f": {note}" if note else ""))
                        refusal = None
                if refusal is None:
                    q.set_status(conn, live.id, "retired")
            if refusal is None:
                q.set_status(conn, candidate.id, "live", note=text, promoted_at=now)
                return self._version(conn, model, number)
        raise refusal

    def rollback(self, key: str, number: int | None = None) -> q.VersionRow:
        """Bring back a version that was live before (the most recent one by default)."""
        now = self.clock.now_ms()
        with self.store.begin() as conn:
            model = self._model(conn, key)
            live = q.live_version(conn, model.id)
            if number is None:
                earlier = [v for v in q.versions(conn, model.id)
                           if v.status == "retired" and v.promoted_at is not None]
                if not earlier:
                    raise Conflict(f"model {key!r} has no earlier live version to roll "
                                   "back to")
                target = max(earlier, key=lambda v: v.promoted_at or 0)
            else:
                target = self._version(conn, model, number)
                if target.status == "live":
                    raise Conflict(f"model {key!r}: version {number} is already live")
                if target.status != "retired" or target.promoted_at is None:
                    raise Conflict(f"model {key!r}: version {number} was never live; "
                                   f"promote it instead (the guard applies)")
            if live is not None:
                q.set_status(conn, live.id, "retired")
            q.set_status(conn, target.id, "live", promoted_at=now,
                         note="rolled back" + (f" from version {live.version}" if live else ""))
            return self._version(conn, model, target.version)

    # --- scoring and explanations --------------------------------------------------------

    def score(self, key: str, progress: Progress | None = None) -> ScoreRun:
        """Score every live contact with the live version; write scores (probability x 100)
        and top-5 explanations where the score changed (or the version did); queue contacts
        whose score moved by `MEANINGFUL_POINTS` for segments and lifecycle rules."""
        say = progress or (lambda _: None)
        now = self.clock.now_ms()
        seconds: dict[str, float] = {}
        mark = time.perf_counter()

        def lap(name: str) -> None:
            nonlocal mark
            seconds[name] = round(time.perf_counter() - mark, 3)
            mark = time.perf_counter()

        with self.store.read() as conn:
            model = self._model(conn, key)
            live = self._live(conn, model)
            spec = parse_model(live.spec)
            fitted = FittedModel.from_artifact(q.artifact(conn, live.id), spec.features)
            say("features")
            snap = snapshot(conn, spec.features, now, all_contacts=True)
            old_ids, old_scores = q.current_scores(conn, model.id)
            same_version = q.scored_version(conn, model.id) == live.version
        lap("features")
        say("predict")
        matrix = fitted.encoder.transform(snap.raw)
        probability = fitted.predict(matrix)
        scores = np.round(probability * 100, 2)
        old = np.full(len(snap.ids), np.nan)
        if len(old_ids):
            at = np.searchsorted(old_ids, snap.ids)
            at_ok = at < len(old_ids)
            hit = np.zeros(len(snap.ids), dtype=bool)
            hit[at_ok] = old_ids[at[at_ok]] == snap.ids[at_ok]
            old[hit] = old_scores[at[hit]]
        moved = np.isnan(old) | (np.abs(scores - np.nan_to_num(old)) >= MEANINGFUL_POINTS)
        changed = snap.ids[moved].tolist()
        # Rows whose score is unchanged (to 0.01) under the same version keep their row.
        write = np.isnan(old) | (np.abs(scores - np.nan_to_num(old)) >= 0.005)
        if not same_version:
            write[:] = True
        lap("predict")
        if write.all():  # the first round, or a new version: no copies of a big matrix
            texts = explanation_texts(fitted, live.version, matrix, probability)
        else:
            texts = explanation_texts(fitted, live.version, matrix[write], probability[write])
        lap("explain")
        say("write")
        with self.store.begin() as conn, gc_paused():
            q.write_scores(conn, model.id, snap.ids[write].tolist(), scores[write].tolist(),
                           texts, now)
            conn.execute(sa.delete(schema.contact_scores).where(
                schema.contact_scores.c.model_id == model.id,
                schema.contact_scores.c.contact_id.in_(
                    sa.select(schema.contacts.c.id).where(
                        schema.contacts.c.merged_into.is_not(None)))))
            lap("write")
            mark_changed(conn, changed, now, consumers=CHANGE_CONSUMERS)
            q.mark_scored(conn, model.id, now)
            lap("queue")
        lap("commit")
        return ScoreRun(key, live.version, len(snap.ids), int(write.sum()), len(changed),
                        round(float(probability.mean()), 6) if len(probability) else 0.0,
                        seconds)

    def explain(self, key: str, contact_id: int) -> dict[str, Any]:
        """Every feature's effect on one contact's score now, with the stored explanation."""
        now = self.clock.now_ms()
        with self.store.read() as conn:
            model = self._model(conn, key)
            live = self._live(conn, model)
            spec = parse_model(live.spec)
            fitted = FittedModel.from_artifact(q.artifact(conn, live.id), spec.features)
            snap = snapshot(conn, spec.features, now, ids=[contact_id])
            if not len(snap.ids):
                raise NotFound("contact", contact_id)
            stored = q.stored_explanation(conn, model.id, contact_id)
        out = explain_row(fitted, live.version, fitted.encoder.transform(snap.raw)[0])
        out["model"] = key
        out["contact_id"] = contact_id
        out["stored"] = None if stored is None else {
            "score": stored[0], "explanation": stored[1], "as_of": stored[2]}
        return out

    # --- the schedule --------------------------------------------------------------------

    def run_schedule(self) -> list[dict[str, Any]]:
        """Retrain models whose schedule is due (promoting through the guard), rescore after
        a promotion or when the rescore interval passed; one outcome per action."""
        now = self.clock.now_ms()
        outcomes: list[dict[str, Any]] = []
        with self.store.read() as conn:
            plans = []
            for model in q.predictive_models(conn):
                spec = parse_model(model.definition)
                newest = next(iter(q.versions(conn, model.id)), None)
                live = q.live_version(conn, model.id)
                plans.append((model, spec, newest, live))
        for model, spec, newest, live in plans:
            every = spec.schedule.retrain_every_days * 86_400_000
            rescore = False
            if every and (newest is None or newest.trained_at <= now - every):
                outcome = self._scheduled_training(model, spec)
                outcomes.append(outcome)
                rescore = outcome["outcome"] == "promoted"
            hours = spec.schedule.rescore_every_hours * 3_600_000
            if not rescore and hours and live is not None and (
                    model.scored_at is None or model.scored_at <= now - hours):
                rescore = True
            if rescore:
                run = self.score(model.key)
                outcomes.append({"model": model.key, "outcome": "scored",
                                 "version": run.version, "contacts": run.contacts,
                                 "changed": run.changed})
        return outcomes

    def _scheduled_training(self, model: q.ModelRow, spec: ModelSpec) -> dict[str, Any]:
        try:
            candidate = self.train(model.key)
        except (ValidationFailed, NotFound) as exc:
            now = self.clock.now_ms()
            with self.store.begin() as conn:
                number = q.insert_version(conn, model.id, spec.to_json(), {}, b"", 0, now,
                                          status="refused",
                                          note=f"scheduled training failed: {exc.message}")
            return {"model": model.key, "outcome": "training failed", "version": number,
                    "reason": exc.message}
        try:
            self.promote(model.key, candidate.version, note="scheduled retraining")
        except PromotionRefused as exc:
            return {"model": model.key, "outcome": "refused", "version": candidate.version,
                    "reason": exc.message}
        return {"model": model.key, "outcome": "promoted", "version": candidate.version,
                "auc": candidate.metrics["auc"]}

    # --- helpers -------------------------------------------------------------------------

    def _model(self, conn: Connection, key: str) -> q.ModelRow:
        found = q.model_by_key(conn, key)
        if found is None or found.kind != q.KIND:
            raise NotFound("predictive model", key)
        return found

    def _version(self, conn: Connection, model: q.ModelRow, number: int) -> q.VersionRow:
        found = q.version(conn, model.id, number)
        if found is None:
            raise NotFound("model version", f"{model.key} v{number}")
        return found

    def _live(self, conn: Connection, model: q.ModelRow) -> q.VersionRow:
        live = q.live_version(conn, model.id)
        if live is None:
            raise Conflict(f"model {model.key!r} has no live version; train one (`cadenza "
                           f"models train {model.key}`) and promote it")
        return live

    def _check_references(self, conn: Connection, spec: ModelSpec) -> None:
        missing = [("outcome.event", spec.outcome.event)] if not q.event_name_exists(
            conn, spec.outcome.event) else []
        for index, f in enumerate(spec.features):
            if f.kind != "attr" and not q.event_name_exists(conn, f.name):
                missing.append((f"features.{index}", f.name))
        if missing:
            field, name = missing[0]
            names = [r[0] for r in conn.execute(
                sa.select(schema.events.c.name).distinct().limit(2000))]
            close = difflib.get_close_matches(name, names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValidationFailed(field, f"no event named {name!r} was ever recorded{hint}; "
                                   "check the spelling (names are case-sensitive)")
        for index, f in enumerate(spec.features):
            if f.kind == "attr" and f.name not in BUILTIN_COLUMNS and \
                    not q.attribute_known(conn, f.name):
                raise ValidationFailed(f"features.{index}", f"attribute {f.name!r} is neither "
                                       "declared nor present on any contact; check the name")
