"""Feature extraction against hand-computed values: windows and their edges, last seen,
sums of numeric properties only, attribute types, missing values, merged contacts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sqlalchemy as sa

from cadenza.leads.features import Encoder, labels, snapshot
from cadenza.leads.predictive import Feature, parse_model
from cadenza.store import Store, schema

DAY = 86_400_000
REF = 1_800_000_000_000


def _spec() -> list[Feature]:
    return list(parse_model({
        "key": "k", "outcome": {"event": "Buy", "where": {"plan": "pro", "order.ok": True}},
        "horizon_days": 10,
        "features": [
            {"attr": "employees", "type": "number"},
            {"attr": "verified", "type": "boolean"},
            {"attr": "plan", "type": "enum", "values": ["free", "pro"]},
            {"attr": "signup_date", "type": "date"},
            {"count": "Visit", "windows": [7, 30]},
            {"days_since": "Visit", "cap": 60},
            {"sum": "Buy", "property": "order.total", "windows": [30]},
        ]}).features)


@pytest.fixture
def world(store: Store) -> Store:
    """Three live contacts and one merged away, with events around the windows' edges."""
    c, e = schema.contacts, schema.events
    with store.begin() as conn:
        conn.execute(sa.insert(c), [
            {"id": 1, "attributes": {"employees": 10, "verified": True, "plan": "pro",
                                     "signup_date": "2027-01-05"},
             "created_at": 0, "updated_at": 0},
            {"id": 2, "attributes": {"employees": "many", "verified": False, "plan": "team",
                                     "signup_date": "2027-01-15T10:00:00Z"},
             "created_at": 0, "updated_at": 0},
            {"id": 3, "attributes": {}, "created_at": 0, "updated_at": 0},
            {"id": 4, "attributes": {"employees": 99}, "created_at": 0, "updated_at": 0},
        ])
        conn.execute(sa.update(c).where(c.c.id == 4).values(merged_into=1))
        rows = [
            (1, "Visit", {}, REF),                 # at the snapshot time: counts
            (1, "Visit", {}, REF - 7 * DAY),       # exactly 7 days before: outside 7d
            (1, "Visit", {}, REF - 20 * DAY),
            (1, "Visit", {}, REF + 1),             # after the snapshot: never
            (2, "Visit", {}, REF - 45 * DAY),      # only in days_since (cap 60)
            (2, "Visit", {}, REF - 90 * DAY),      # beyond every look-back
            (1, "Buy", {"order": {"total": 12.5}}, REF - DAY),
            (1, "Buy", {"order": {"total": "12"}}, REF - DAY),  # not a number: ignored
            (2, "Buy", {"order": {"total": 3}}, REF - 29 * DAY),
            (4, "Visit", {}, REF - DAY),           # merged contact: not in the population
            (1, "Buy", {"plan": "pro", "order": {"ok": True}}, REF + DAY),   # a label
            (2, "Buy", {"plan": "pro", "order": {"ok": False}}, REF + DAY),  # filter fails
            (3, "Buy", {"plan": "pro", "order": {"ok": True}}, REF + 11 * DAY),  # too late
        ]
        conn.execute(sa.insert(e), [
            {"message_id": f"m{i}", "contact_id": cid, "type": "track", "name": name,
             "properties": props, "context": {}, "source": "test", "timestamp": ts,
             "received_at": ts} for i, (cid, name, props, ts) in enumerate(rows)])
    return store


def test_features_match_hand_computed_values(world: Store) -> None:
    features = _spec()
    with world.read() as conn:
        snap = snapshot(conn, features, REF, all_contacts=True)
        one = snapshot(conn, features, REF, ids=[2])
    assert snap.ids.tolist() == [1, 2, 3]
    raw = snap.raw
    assert raw["attr:employees"][0] == 10
    assert math.isnan(raw["attr:employees"][1])
    assert math.isnan(raw["attr:employees"][2])
    assert raw["attr:verified"][:2].tolist() == [1.0, 0.0]
    assert raw["attr:plan"].tolist() == ["pro", "team", None]
    assert raw["attr:signup_date"][:2].tolist() == [10.0, 0.0]  # REF is 2027-01-15
    assert raw["count:Visit"].tolist() == [[1, 3], [0, 0], [0, 0]]
    assert raw["days_since:Visit"].tolist() == [0.0, 45.0, 60.0]
    assert raw["sum:Buy.order.total"].tolist() == [[12.5], [3.0], [0.0]]
    assert one.ids.tolist() == [2]
    assert one.raw["days_since:Visit"].tolist() == [45.0]
    assert one.raw["count:Visit"].tolist() == [[0, 0]]


def test_labels_follow_the_outcome_filter(world: Store) -> None:
    outcome = parse_model({"key": "k", "outcome": {"event": "Buy", "where": {
        "plan": "pro", "order.ok": True}}, "horizon_days": 10,
        "features": [{"count": "Visit"}]}).outcome
    with world.read() as conn:
        assert labels(conn, outcome, REF, REF + 10 * DAY).tolist() == [1]


def test_encoder_columns_and_imputation(world: Store) -> None:
    features = _spec()
    with world.read() as conn:
        snap = snapshot(conn, features, REF, all_contacts=True)
    encoder = Encoder.fit(features, snap.raw)
    names = [name for name, _ in encoder.columns]
    assert names == ["attr:employees", "attr:employees missing", "attr:verified",
                     "attr:verified missing", "attr:plan=free", "attr:plan=pro",
                     "attr:plan=other", "attr:signup_date", "attr:signup_date missing",
                     "count:Visit:7d", "count:Visit:30d", "days_since:Visit",
                     "sum:Buy.order.total:30d"]
    matrix = encoder.transform(snap.raw)
    assert matrix.shape == (3, len(names))
    assert matrix[1, 0] == 10  # missing: the mean of the known values
    assert matrix[:, 1].tolist() == [0, 1, 1]
    assert matrix[:, 4:7].tolist() == [[0, 1, 0], [0, 0, 1], [0, 0, 1]]
    back = Encoder.from_json(encoder.to_json(), features)
    assert np.array_equal(back.transform(snap.raw), matrix)
