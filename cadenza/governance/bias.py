"""Bias monitoring: do automated decisions select some groups less often than others?

For a decision (a branch arm taken, a grade reached, a lead routed, an offer sent) and an
attribute that splits contacts into groups, each group's selection rate is compared with a
reference group's:

- selection-rate ratio (disparate impact) rate_g / rate_ref, with a Katz log-scale interval;
- statistical parity difference rate_g - rate_ref, with Newcombe's hybrid score interval
  (built from the groups' Wilson intervals, sound for small groups and rates near 0 or 1).

A group is flagged when its ratio is below `threshold` (the four-fifths rule: 0.8) and the
whole interval of the ratio lies below 1 — a disparity that chance does not explain. Groups
smaller than `min_group` are reported but never flagged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from scipy.stats import norm

from cadenza.errors import ValidationFailed


def wilson(selected: int, total: int, z: float) -> tuple[float, float]:
    """Wilson score interval of a proportion."""
    if total == 0:
        return 0.0, 1.0
    p = selected / total
    centre = p + z * z / (2 * total)
    spread = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total))
    denominator = 1 + z * z / total
    return max(0.0, (centre - spread) / denominator), min(1.0, (centre + spread) / denominator)


@dataclass(frozen=True)
class GroupDisparity:
    """One group against the reference group."""

    group: str
    selected: int
    total: int
    rate: float
    rate_ci: tuple[float, float]
    ratio: float | None
    """rate / reference rate (None when the reference never selects)."""
    ratio_ci: tuple[float, float] | None
    parity_difference: float
    parity_ci: tuple[float, float]
    flagged: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"group": self.group, "selected": self.selected, "total": self.total,
                "rate": self.rate, "rate_ci": list(self.rate_ci), "ratio": self.ratio,
                "ratio_ci": list(self.ratio_ci) if self.ratio_ci else None,
                "parity_difference": self.parity_difference,
                "parity_ci": list(self.parity_ci), "flagged": self.flagged}


@dataclass(frozen=True)
class DisparityReport:
    """Every group of an attribute for one decision."""

    reference: str
    threshold: float
    confidence: float
    groups: list[GroupDisparity] = field(default_factory=list)

    @property
    def flagged(self) -> list[GroupDisparity]:
        """The groups that cross the threshold significantly (what alerts fire on)."""
        return [g for g in self.groups if g.flagged]

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"reference": self.reference, "threshold": self.threshold,
                "confidence": self.confidence, "groups": [g.to_dict() for g in self.groups],
                "flagged": [g.group for g in self.flagged]}


def disparity(counts: Mapping[str, tuple[int, int]], *, reference: str | None = None,
              threshold: float = 0.8, confidence: float = 0.95,
              min_group: int = 30) -> DisparityReport:
    """Compare each group's selection rate with the reference group's.

    `counts` maps a group to (selected, total). The reference defaults to the group with the
    highest selection rate among groups of at least `min_group` (the most favoured).
    """
    if len(counts) < 2:
        raise ValidationFailed("groups", "need at least two groups to compare; choose an "
                                         "attribute with more than one value")
    for group, (selected, total) in counts.items():
        if not 0 <= selected <= total:
            raise ValidationFailed(f"groups.{group}", "selected must be between 0 and total")
    if not 0 < threshold <= 1:
        raise ValidationFailed("threshold", "must be above 0 and at most 1 (0.8 is the "
                                            "four-fifths rule)")
    if not 0.5 <= confidence < 1:
        raise ValidationFailed("confidence", "must be at least 0.5 and below 1, e.g. 0.95")
    z = float(norm.ppf(0.5 + confidence / 2))
    if reference is None:
        sizable = {g: c for g, c in counts.items() if c[1] >= min_group} or dict(counts)
        reference = max(sizable, key=lambda g: (sizable[g][0] / sizable[g][1]
                                                if sizable[g][1] else 0.0, sizable[g][1]))
    if reference not in counts:
        raise ValidationFailed("reference", f"{reference!r} is not one of the groups")
    ref_selected, ref_total = counts[reference]
    ref_rate = ref_selected / ref_total if ref_total else 0.0
    ref_ci = wilson(ref_selected, ref_total, z)
    groups = []
    for group, (selected, total) in sorted(counts.items()):
        rate = selected / total if total else 0.0
        rate_ci = wilson(selected, total, z)
        ratio, ratio_ci = _ratio(selected, total, ref_selected, ref_total, z)
        difference = rate - ref_rate
        # Newcombe's hybrid score interval for a difference of two proportions.
        low = difference - math.sqrt((rate - rate_ci[0]) ** 2 + (ref_ci[1] - ref_rate) ** 2)
        high = difference + math.sqrt((rate_ci[1] - rate) ** 2 + (ref_rate - ref_ci[0]) ** 2)
        flagged = (group != reference and total >= min_group and ratio is not None
                   and ratio < threshold and ratio_ci is not None and ratio_ci[1] < 1.0)
        groups.append(GroupDisparity(group, selected, total, rate, rate_ci, ratio, ratio_ci,
                                     difference, (low, high), flagged))
    return DisparityReport(reference, threshold, confidence, groups)


def _ratio(selected: int, total: int, ref_selected: int, ref_total: int,
           z: float) -> tuple[float | None, tuple[float, float] | None]:
    if not total or not ref_total or not ref_selected:
        return None, None
    # Katz log interval; a half added to empty cells keeps it finite (Haldane-Anscombe).
    a, n1, b, n2 = float(selected), float(total), float(ref_selected), float(ref_total)
    if a == 0 or a == n1 or b == n2:
        a, n1, b, n2 = a + 0.5, n1 + 1, b + 0.5, n2 + 1
    ratio = (selected / total) / (ref_selected / ref_total)
    log_ratio = math.log((a / n1) / (b / n2))
    spread = z * math.sqrt(1 / a - 1 / n1 + 1 / b - 1 / n2)
    return ratio, (math.exp(log_ratio - spread), math.exp(log_ratio + spread))
