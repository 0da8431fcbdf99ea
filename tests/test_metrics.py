"""metrics: localisation scores and the nulls they are read against."""

from __future__ import annotations

import numpy as np
import pytest

from napari_brainage.io import load_volume
from napari_brainage.metrics import auroc, average_precision, depth_map, dice_at_truth, localisation
from napari_brainage.samples import sample_path
from napari_brainage.space.template import load_template


def _brute_force_ap(scores, positives):
    """Precision times recall gained at every distinct threshold, from the top: the definition."""
    ap, recall_before = 0.0, 0.0
    for threshold in np.unique(scores)[::-1]:
        chosen = scores >= threshold
        precision = (chosen & positives).sum() / chosen.sum()
        recall = (chosen & positives).sum() / positives.sum()
        ap += (recall - recall_before) * precision
        recall_before = recall
    return ap


def test_average_precision_follows_its_definition_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(5):
        scores = rng.integers(0, 12, 400).astype(float)   # many ties
        positives = rng.random(400) < 0.15
        assert average_precision(scores, positives) == pytest.approx(_brute_force_ap(scores, positives), abs=1e-12)
    positives = np.zeros(100, bool)
    positives[:10] = True
    assert average_precision(np.where(positives, 2.0, 1.0), positives) == 1.0
    assert average_precision(np.ones(100), positives) == pytest.approx(0.10)   # chance: the prevalence
    assert dice_at_truth(np.where(positives, 2.0, 1.0), positives) == 1.0
    assert dice_at_truth(np.where(positives, 0.0, 1.0), positives) == 0.0
    with pytest.raises(ValueError):
        average_precision(np.ones(10), np.ones(10, bool))


def test_depth_map_is_deepest_in_the_middle():
    grid = np.indices((41, 41, 41)) - 20
    ball = (grid**2).sum(axis=0) <= 15**2
    depth = depth_map(ball, voxel_mm=2.0)
    assert depth[20, 20, 20] == pytest.approx(32.0, abs=2.1)   # 16 voxels to the outside, 2 mm each
    assert depth[~ball].max() == 0 and depth[ball].min() == 2.0


def test_the_depth_only_null_already_scores_high_on_the_standard_ground_truth():
    """Why every localisation figure carries the nulls: the ageing truth of the standard
    cohort (ventricles and hippocampi) is deep, so a map that knows only depth ranks it
    well by AUROC; AP and Dice@GT, which look at the top of the ranking, leave room."""
    kit = load_template(2)
    truth = load_volume(sample_path("synthetic_ground_truth")).data.astype(bool) & kit.brain
    scores = localisation(depth_map(kit.brain, 2.0), truth, kit.brain)
    share = truth.sum() / kit.brain.sum()
    assert 0.85 < scores["auroc"] < 0.95
    assert 3 * share < scores["ap"] < 0.5 and scores["dice_at_gt"] < 0.55
    assert auroc(depth_map(kit.brain), truth, kit.brain) == pytest.approx(scores["auroc"])  # units do not matter
