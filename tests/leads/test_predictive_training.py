"""The model itself, without a database: both calibration paths, exact explanations, the
JSON artifact round trip."""

from __future__ import annotations

import numpy as np
import pytest

from cadenza.leads import training
from cadenza.leads.explain import explain_row, explanation_texts, top_effects
from cadenza.leads.predictive import Feature
from cadenza.leads.training import FittedModel, fit

FEATURES = [Feature("count", "Pricing Viewed", windows=(30,)),
            Feature("attr", "employees", type="number"),
            Feature("attr", "plan", type="enum", values=("free", "pro"))]


def _data(n: int, seed: int = 5) -> tuple[dict[str, np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    views = rng.poisson(2.0, n).astype(float)
    employees = rng.normal(100, 30, n)
    employees[rng.random(n) < 0.1] = np.nan
    plan = rng.choice(np.array(["free", "pro", "team", None], dtype=object), n)
    chance = 1 / (1 + np.exp(-(-3.0 + 0.9 * views)))
    y = (rng.random(n) < chance).astype(np.int64)
    return {"count:Pricing Viewed": views[:, None], "attr:employees": employees,
            "attr:plan": plan}, y


@pytest.mark.parametrize("large", [10**9, 500])
def test_both_calibration_paths_are_calibrated(large: int,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(training, "LARGE", large)
    raw, y = _data(6000)
    result = fit(FEATURES, raw, y, seed=3)
    m = result.metrics
    assert m["auc"] > 0.75
    assert m["importances"][0]["feature"] == "count:Pricing Viewed:30d"
    probability = result.model.predict(result.model.encoder.transform(raw))
    assert abs(probability.mean() - y.mean()) < 0.015
    filled = [row for row in m["calibration"] if row["count"]]
    gap = sum(row["count"] * abs(row["mean_predicted"] - row["observed"]) for row in filled)
    assert gap / m["rows"]["holdout"] < 0.04  # expected calibration error


def test_effects_add_up_to_the_log_odds() -> None:
    raw, y = _data(3000)
    model = fit(FEATURES, raw, y, seed=3).model
    matrix = model.encoder.transform(raw)
    logits = np.log(model.predict(matrix) / (1 - model.predict(matrix)))
    assert np.allclose(model.baseline_logit + model.effects(matrix).sum(axis=1), logits)
    shown = explain_row(model, 4, matrix[7])
    assert shown["version"] == 4
    assert sum(f["effect"] for f in shown["features"]) == pytest.approx(
        logits[7] - model.baseline_logit, abs=1e-3)


def test_top_effects_and_texts() -> None:
    effects = np.array([[0.1, -3.0, 2.0, 0.0], [1.0, 1.0, -0.5, 4.0]])
    assert top_effects(effects, 3).tolist() == [[1, 2, 0], [3, 0, 1]]
    raw, y = _data(2000)
    model = fit(FEATURES, raw, y, seed=3).model
    matrix = model.encoder.transform(raw)[:3]
    import orjson

    texts = [orjson.loads(t) for t in explanation_texts(model, 2, matrix,
                                                        model.predict(matrix))]
    assert [len(t["top"]) for t in texts] == [5, 5, 5]
    assert all(isinstance(name, str) for t in texts for name, _, _ in t["top"])


def test_the_artifact_is_json_and_round_trips() -> None:
    raw, y = _data(2000)
    model = fit(FEATURES, raw, y, seed=3).model
    blob = model.to_artifact()
    assert blob.startswith(b'{"format":1')
    back = FittedModel.from_artifact(blob, FEATURES)
    matrix = model.encoder.transform(raw)
    assert np.allclose(back.predict(back.encoder.transform(raw)), model.predict(matrix))
    with pytest.raises(ValueError, match="unknown model artifact format"):
        FittedModel.from_artifact(b'{"format": 9}', FEATURES)
