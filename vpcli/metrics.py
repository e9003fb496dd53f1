"""Overlap measures shared by the evaluation suites and quality control (numpy only)."""

from __future__ import annotations

import numpy as np


def dice(prediction, truth) -> float:
    """Dice overlap of two boolean arrays of one shape (1.0 when both are empty)."""
    prediction = np.asarray(prediction, dtype=bool)
    truth = np.asarray(truth, dtype=bool)
    if prediction.shape != truth.shape:
        raise ValueError(f'dice: shapes {prediction.shape} and {truth.shape} differ')
    total = int(prediction.sum()) + int(truth.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(prediction, truth).sum()) / total
