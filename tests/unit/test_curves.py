"""The ranking measures behind `semcache eval`'s frontier and intervals."""

from __future__ import annotations

import numpy as np

from gateway.tools.curves import auc, precision_at, wilson


def test_auc_perfect_reversed_and_tied() -> None:
    label = np.array([True, True, False, False])
    assert auc(np.array([0.9, 0.8, 0.2, 0.1]), label) == 1.0
    assert auc(np.array([0.1, 0.2, 0.8, 0.9]), label) == 0.0
    assert auc(np.array([0.5, 0.5, 0.5, 0.5]), label) == 0.5  # ties count half
    assert np.isnan(auc(np.array([0.5, 0.4]), np.array([True, True])))


def test_precision_at_takes_only_reachable_thresholds() -> None:
    # a positive and a negative tie at 0.9: no threshold takes the positive alone
    assert precision_at(np.array([0.9, 0.9, 0.3]), np.array([True, False, False]), 1.0) == 0.5
    score = np.array([0.9, 0.9, 0.8, 0.3])
    label = np.array([True, False, True, False])
    # the best of every threshold with enough recall: 0.8 takes both positives (2 of 3)
    assert precision_at(score, label, 0.5) == round(2 / 3, 4)
    assert precision_at(score, label, 1.0) == round(2 / 3, 4)
    assert precision_at(np.array([0.9, 0.8]), np.array([True, False]), 0.5) == 1.0
    assert precision_at(score, np.zeros(4, dtype=bool), 0.5) is None


def test_wilson_interval() -> None:
    lo, hi = wilson(0, 10)
    assert lo == 0.0 and 0.27 < hi < 0.28  # 0 of 10 still allows ~28%
    lo, hi = wilson(95, 100)
    assert 0.88 < lo < 0.89 and 0.97 < hi < 0.98
    assert wilson(0, 0) == (0.0, 1.0)
