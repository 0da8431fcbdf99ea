"""Scores of a map against a ground-truth mask, and the null maps they are read against.

Map values are scores, ground-truth voxels positives, over a domain (usually
the brain):

* AUROC, from ranks (Mann-Whitney U), ties averaged: the whole ranking, so a map
  that only knows that the truth is deep scores 0.90 on the standard cohort.
* Average precision (AP): the area under the precision-recall curve, which
  looks at the top of the ranking, where the eye goes; chance is the truth's
  share of the domain.
* Dice@GT: Dice of the map's top |GT| voxels with the truth (equal to the
  precision there, since both sets have |GT| voxels).

Every localisation figure is reported beside two nulls measured in the same
run (issue 18): :func:`depth_map`, which knows only how deep each voxel lies in
the brain, and the population map used as every subject's map.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.stats import rankdata


def auroc(scores: np.ndarray, positives: np.ndarray, domain: np.ndarray | None = None) -> float:
    """Area under the ROC curve of ``scores`` separating ``positives`` within ``domain``."""
    scores, positives = _within(scores, positives, domain)
    n_pos = int(positives.sum())
    n_neg = positives.size - n_pos
    ranks = rankdata(scores)
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def relevance_mass(scores: np.ndarray, positives: np.ndarray, domain: np.ndarray) -> float:
    """Share of the (non-negative) map's total inside the domain that falls in ``positives``."""
    scores = np.clip(np.asarray(scores, dtype=np.float64), 0, None)
    inside = scores[np.asarray(domain, bool)].sum()
    return float(scores[np.asarray(positives, bool) & np.asarray(domain, bool)].sum() / inside) if inside else 0.0


def _within(scores: np.ndarray, positives: np.ndarray, domain: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64)
    positives = np.asarray(positives, dtype=bool)
    if domain is not None:
        domain = np.asarray(domain, dtype=bool)
        scores, positives = scores[domain], positives[domain]
    scores, positives = scores.ravel(), positives.ravel()
    if not positives.any() or positives.all():
        raise ValueError("a localisation score needs both positive and negative voxels")
    return scores, positives


def average_precision(scores: np.ndarray, positives: np.ndarray, domain: np.ndarray | None = None) -> float:
    """Average precision of ``scores`` retrieving ``positives`` within ``domain``:
    sum over the distinct score thresholds, from the highest down, of precision
    times the recall gained (tied voxels enter together, as in scikit-learn's
    ``average_precision_score``). Chance: the positives' share of the domain."""
    scores, positives = _within(scores, positives, domain)
    order = np.argsort(-scores, kind="stable")
    scores, positives = scores[order], positives[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]
    true_pos = np.cumsum(positives)[last_of_tie]
    precision = true_pos / (last_of_tie + 1)
    recall_gain = np.diff(np.r_[0, true_pos]) / positives.sum()
    return float((precision * recall_gain).sum())


def dice_at_truth(scores: np.ndarray, positives: np.ndarray, domain: np.ndarray | None = None) -> float:
    """Dice of the top |positives| voxels of ``scores`` (within ``domain``) with the
    positives; ties at the cut broken by voxel order."""
    scores, positives = _within(scores, positives, domain)
    k = int(positives.sum())
    top = np.argpartition(-scores, k - 1)[:k]
    return float(positives[top].sum() / k)


def localisation(scores: np.ndarray, positives: np.ndarray, domain: np.ndarray | None = None) -> dict[str, float]:
    """``{"auroc", "ap", "dice_at_gt"}`` of one map against one truth."""
    return {"auroc": auroc(scores, positives, domain), "ap": average_precision(scores, positives, domain),
            "dice_at_gt": dice_at_truth(scores, positives, domain)}


def depth_map(domain: np.ndarray, voxel_mm: float = 1.0) -> np.ndarray:
    """The depth-only null: each voxel's distance (mm) to the outside of ``domain``
    (0 outside it). A map that knows nothing of the model or the subject, only
    that deep voxels are deep."""
    return (ndimage.distance_transform_edt(np.asarray(domain, bool)) * voxel_mm).astype(np.float32)
