"""Disparity statistics for bias monitoring."""

from __future__ import annotations

import random

import pytest

from cadenza.errors import ValidationFailed
from cadenza.governance.bias import disparity, wilson


def test_a_known_disparity_matches_hand_computed_intervals() -> None:
    report = disparity({"a": (50, 100), "b": (30, 100)})
    assert report.reference == "a"
    b = next(g for g in report.groups if g.group == "b")
    assert b.ratio == pytest.approx(0.6)
    assert b.ratio_ci == pytest.approx((0.4193, 0.8585), abs=1e-3)
    assert b.parity_difference == pytest.approx(-0.2)
    assert b.parity_ci == pytest.approx((-0.3258, -0.0642), abs=2e-3)
    assert b.flagged
    assert [g.group for g in report.flagged] == ["b"]


def test_wilson_matches_the_textbook_interval() -> None:
    assert wilson(50, 100, 1.959964) == pytest.approx((0.4038, 0.5962), abs=1e-4)
    assert wilson(0, 10, 1.959964)[0] == 0.0
    assert wilson(0, 0, 1.96) == (0.0, 1.0)


def test_small_groups_and_chance_differences_are_not_flagged() -> None:
    report = disparity({"a": (10, 20), "b": (5, 20)}, min_group=30)
    assert report.flagged == []
    close = disparity({"a": (52, 100), "b": (48, 100)})
    assert close.flagged == []


def test_equal_rates_are_rarely_flagged_and_real_gaps_almost_always() -> None:
    rng = random.Random(7)

    def draw(rate: float, n: int) -> tuple[int, int]:
        return sum(rng.random() < rate for _ in range(n)), n

    false_alarms = sum(bool(disparity({"a": draw(0.3, 400), "b": draw(0.3, 400)}).flagged)
                       for _ in range(200))
    caught = sum(bool(disparity({"a": draw(0.5, 400), "b": draw(0.25, 400)}).flagged)
                 for _ in range(100))
    assert false_alarms <= 10  # 5 % nominal, one-sided and with the 0.8 bar: fewer
    assert caught >= 97


def test_a_reference_that_never_selects_gives_no_ratio() -> None:
    report = disparity({"a": (0, 50), "b": (0, 60)}, reference="a")
    assert all(g.ratio is None for g in report.groups)
    assert report.flagged == []


@pytest.mark.parametrize(("counts", "kwargs", "field"), [
    ({"a": (1, 2)}, {}, "groups"),
    ({"a": (3, 2), "b": (1, 2)}, {}, "groups.a"),
    ({"a": (1, 2), "b": (1, 2)}, {"threshold": 1.5}, "threshold"),
    ({"a": (1, 2), "b": (1, 2)}, {"confidence": 1.0}, "confidence"),
    ({"a": (1, 2), "b": (1, 2)}, {"reference": "c"}, "reference"),
])
def test_bad_requests_name_the_field(counts: dict[str, tuple[int, int]],
                                     kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        disparity(counts, **kwargs)  # type: ignore[arg-type]
    assert caught.value.field == field
