"""Scores of a map against a ground-truth mask (see shared science notes).

AUROC: map values as scores, ground-truth voxels as positives, over a domain
(usually the brain). Computed from ranks (Mann-Whitney U), ties averaged.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def auroc(scores: np.ndarray, positives: np.ndarray, domain: np.ndarray | None = None) -> float:
    """Area under the ROC curve of ``scores`` separating ``positives`` within ``domain``."""
    scores = np.asarray(scores, dtype=np.float64)
    positives = np.asarray(positives, dtype=bool)
    if domain is not None:
        domain = np.asarray(domain, dtype=bool)
        scores, positives = scores[domain], positives[domain]
    scores, positives = scores.ravel(), positives.ravel()
    n_pos = int(positives.sum())
    n_neg = positives.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUROC needs both positive and negative voxels")
    ranks = rankdata(scores)
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def relevance_mass(scores: np.ndarray, positives: np.ndarray, domain: np.ndarray) -> float:
    """Share of the (non-negative) map's total inside the domain that falls in ``positives``."""
    scores = np.clip(np.asarray(scores, dtype=np.float64), 0, None)
    inside = scores[np.asarray(domain, bool)].sum()
    return float(scores[np.asarray(positives, bool) & np.asarray(domain, bool)].sum() / inside) if inside else 0.0
