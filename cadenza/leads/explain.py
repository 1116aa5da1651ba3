"""Why a contact got its predictive score: the features that moved it most.

For the logistic model, a contact's calibrated log-odds are the baseline (the average
contact's) plus one exact term per column, `a * coef * (value - mean) / scale`. An
explanation lists the largest terms by absolute size, with the raw value and the term
(`effect`, in log-odds: positive raised the score, negative lowered it). The stored top five
are `[feature, value, effect]` triples (compact: a million of them are written per round);
`explain_row` gives every column with names.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from cadenza.leads.features import gc_paused
from cadenza.leads.training import FittedModel

TOP = 5


def top_effects(effects: np.ndarray, top: int = TOP) -> np.ndarray:
    """Per row, the column indices of the `top` largest absolute effects, largest first
    (repeated arg-max over the row: for a few dozen columns, much faster than a sort)."""
    k = min(top, effects.shape[1])
    size = np.abs(effects)
    rows = np.arange(effects.shape[0])
    picked = np.empty((effects.shape[0], k), dtype=np.int64)
    for j in range(k):
        best = size.argmax(axis=1)
        picked[:, j] = best
        size[rows, best] = -1.0
    return picked


def explanation_texts(model: FittedModel, version: int, matrix: np.ndarray,
                      probability: np.ndarray, top: int = TOP) -> list[str]:
    """The stored explanation of every row as JSON text, built in bulk:
    `{"version": 3, "probability": 0.12, "top": [[feature, value, effect], ...]}` with the
    largest absolute effect first (effects in calibrated log-odds)."""
    with gc_paused():  # ten million floats become Python objects here
        effects = model.effects(matrix)
        picked = top_effects(effects, top)
        names = model.columns
        values = np.take_along_axis(matrix, picked, axis=1).round(4).tolist()
        sizes = np.take_along_axis(effects, picked, axis=1).round(4).tolist()
        del effects
        dumps = orjson.dumps
        return [dumps({"version": version, "probability": p,
                       "top": list(zip(map(names.__getitem__, cs), vs, es, strict=True))}
                      ).decode()
                for p, cs, vs, es in zip(probability.round(6).tolist(), picked.tolist(),
                                         values, sizes, strict=True)]


def explain_row(model: FittedModel, version: int, row: np.ndarray) -> dict[str, Any]:
    """Every column's effect for one contact, largest first, with the baseline."""
    matrix = row[None, :]
    effects = model.effects(matrix)[0]
    probability = float(model.predict(matrix)[0])
    baseline = float(1.0 / (1.0 + np.exp(-model.baseline_logit)))
    order = np.argsort(-np.abs(effects), kind="stable")
    return {"version": version, "probability": round(probability, 6),
            "score": round(probability * 100, 2),
            "baseline_probability": round(baseline, 6),
            "baseline_logit": round(model.baseline_logit, 6),
            "features": [{"feature": model.columns[i], "value": round(float(row[i]), 4),
                          "mean": round(float(model.mean[i]), 4),
                          "effect": round(float(effects[i]), 4)} for i in order]}
