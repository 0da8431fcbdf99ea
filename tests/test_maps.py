"""Core behind the map widgets: thresholds, subject-vs-population comparison,
region ranking and navigation, captioned snapshots."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from napari_brainage.compare import compare_maps, dice
from napari_brainage.errors import InputError
from napari_brainage.io import Volume
from napari_brainage.metrics import depth_map
from napari_brainage.population import (
    rank_regions,
    rank_regions_of,
    read_region_table,
    region_peak,
    structure_name,
    write_region_table,
)
from napari_brainage.report import CAPTION_FONT_PX, captioned, save_png
from napari_brainage.space.grid import resample
from napari_brainage.space.template import load_template, mni_grid
from napari_brainage.threshold import Thresholder, top_percent_mask


def _random_map(seed=0, shape=(30, 40, 35)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    values = rng.random(shape).astype(np.float32)
    values[:5] = 0  # background
    return values


@pytest.mark.parametrize("percent", [0.5, 5.0, 37.5, 100.0])
def test_top_percent_keeps_that_share_of_the_brain(percent):
    values = _random_map()
    thresholder = Thresholder(values)
    mask = thresholder.top_percent(percent)
    inside = values > 0
    assert not mask[~inside].any()
    assert mask.sum() == pytest.approx(inside.sum() * percent / 100, abs=1)
    # Every kept voxel outranks every dropped brain voxel.
    assert values[mask].min() >= values[inside & ~mask].max(initial=0)
    assert thresholder.percent_above(thresholder.value_for_top_percent(percent)) == pytest.approx(percent, abs=0.01)


def test_absolute_threshold_and_buffer_reuse():
    values = _random_map(1)
    thresholder = Thresholder(values)
    out = np.zeros(values.shape, dtype=np.uint8)
    thresholder.mask(0.75, out=out.view(bool))  # written straight into a Labels-style buffer
    np.testing.assert_array_equal(out.astype(bool), values >= 0.75)
    # A value at or below 0 never selects the background.
    assert thresholder.mask(-1.0).sum() == (values > 0).sum()
    explicit = Thresholder(values, within=np.ones(values.shape, bool))
    assert explicit.mask(0.0).all()


def test_thresholder_rejects_empty_and_bad_input():
    with pytest.raises(ValueError, match="no voxels inside the brain"):
        Thresholder(np.zeros((4, 4, 4)))
    with pytest.raises(ValueError, match="3D"):
        Thresholder(np.ones((4, 4)))
    with pytest.raises(ValueError, match="percent"):
        Thresholder(_random_map()).value_for_top_percent(0)


def test_top_percent_mask_and_dice():
    values = _random_map(2)
    within = values > 0
    mask = top_percent_mask(values, within, 10)
    assert mask.sum() == round(within.sum() * 0.1)
    assert dice(mask, mask) == 1.0 and dice(mask, ~mask & within) == 0.0


def _template_map(seed: int) -> Volume:
    shape, affine = mni_grid(2)
    kit = load_template(2)
    rng = np.random.default_rng(seed)
    smooth = np.cumsum(rng.random(shape), axis=0).astype(np.float32)
    return Volume(np.where(kit.brain, smooth / smooth.max(), 0).astype(np.float32), affine)


def test_compare_identical_maps_and_a_shuffled_one():
    population = _template_map(0)
    same = compare_maps(population, population, top_percent=10)
    assert same.dice_top == 1.0 and same.correlation == pytest.approx(1.0)
    assert np.abs(same.difference.data).max() == 0
    np.testing.assert_array_equal(same.difference.affine, population.affine)

    brain = load_template(2).brain
    shuffled = population.data.copy()
    shuffled[brain] = np.random.default_rng(1).permutation(shuffled[brain])
    other = compare_maps(Volume(shuffled, population.affine), population, top_percent=10)
    assert other.correlation < 0.1 and other.dice_top < 0.2
    expected = np.where(brain, shuffled - population.data, 0)
    np.testing.assert_allclose(other.difference.data, expected, atol=1e-6)
    assert "Dice of top 10 %" in other.summary()


def test_compare_brings_a_subject_map_on_its_own_grid_to_the_template():
    population = _template_map(3)
    # The subject's map on a 1.5 mm grid covering the same brain.
    affine = np.diag([1.5, 1.5, 1.5, 1.0])
    affine[:3, 3] = [-91, -127, -73]
    subject = Volume(resample(population.data, population.affine, (124, 148, 124), affine), affine)
    result = compare_maps(subject, population, top_percent=20)
    assert result.correlation > 0.95 and result.dice_top > 0.8
    with pytest.raises(ValueError, match="MNI grid"):
        compare_maps(population, subject)


def test_fast_region_ranking_matches_a_plain_loop():
    kit = load_template(2)
    values = _template_map(4).data
    scores = rank_regions(values, kit)
    top = top_percent_mask(values, kit.brain, 10)
    for score in scores[:10]:
        labels = [label for label, name in kit.label_names.items() if structure_name(name) == score.region]
        mask = np.isin(kit.labels, labels) & kit.brain
        assert score.mean_importance == pytest.approx(float(values[mask].mean()), rel=1e-5)
        assert score.voxels == int(mask.sum())
        assert score.top_share == pytest.approx(float(top[mask].mean()), rel=1e-5)
    keys = [(s.top_share, s.mean_importance) for s in scores]
    assert keys == sorted(keys, reverse=True)


def test_region_shares_separate_regions_whose_means_tie():
    """A map near 1 over the deep brain (as noise-model maps are): the means differ in
    the third decimal, the share in the top 10 % spreads regions over 0-1."""
    kit = load_template(2)
    depth = depth_map(kit.brain)
    values = np.where(kit.brain, 0.99 + 0.001 * depth / depth.max(), 0).astype(np.float32)
    hippocampus = kit.label_mask("Left_Hippocampus", "Right_Hippocampus") & kit.brain
    values[hippocampus] += 0.0005  # a little more important than its depth says
    scores = rank_regions(values, kit)
    assert scores[0].region == "Hippocampus" and scores[0].top_share > 0.9
    means = [s.mean_importance for s in scores[:8]]
    shares = [s.top_share for s in scores[:8]]
    assert max(means) - min(means) < 0.001 < 0.3 < max(shares) - min(shares)


def test_region_shares_count_exactly_the_top_tenth_of_a_mostly_zero_map():
    """A mask-like map (0 over 99 % of the brain): ties at the cut share what is left of
    the top 10 %, so not every region reads 100 %."""
    kit = load_template(2)
    hippocampus = kit.label_mask("Left_Hippocampus", "Right_Hippocampus") & kit.brain
    scores = rank_regions(hippocampus.astype(np.float32), kit)
    assert scores[0].region == "Hippocampus" and scores[0].top_share == pytest.approx(1.0)
    rest = (0.10 * kit.brain.sum() - hippocampus.sum()) / (kit.brain.sum() - hippocampus.sum())
    assert all(s.top_share == pytest.approx(rest, abs=0.002) for s in scores[1:])
    total = sum(s.top_share * s.voxels for s in scores) + rest * (kit.brain.sum() - sum(s.voxels for s in scores))
    assert total == pytest.approx(0.10 * kit.brain.sum(), rel=0.01)


def test_a_region_table_written_before_shares_still_reads(tmp_path):
    old = tmp_path / "old.csv"
    old.write_text("rank,region,mean_importance,voxels\n1,Thalamus,0.99144,2864\n")
    (score,) = read_region_table(old)
    assert score.region == "Thalamus" and score.voxels == 2864 and np.isnan(score.top_share)


def test_region_table_round_trips_with_shares(tmp_path):
    scores = rank_regions(_template_map(4).data)
    back = read_region_table(write_region_table(scores, tmp_path / "regions.csv"))
    assert [s.region for s in back] == [s.region for s in scores]
    assert [s.top_share for s in back] == pytest.approx([s.top_share for s in scores], abs=1e-4)


def test_region_peak_lies_in_the_region_at_its_maximum():
    kit = load_template(2)
    values = _template_map(5)
    mask = kit.label_mask("Left_Hippocampus", "Right_Hippocampus") & kit.brain
    hot = np.argwhere(mask)[7]
    values.data[tuple(hot)] = 5.0  # the single hottest voxel, inside the hippocampus
    ras = region_peak(values, "Hippocampus")
    np.testing.assert_allclose(ras, (kit.affine @ [*hot, 1])[:3])
    assert rank_regions_of(values)[0].region == rank_regions(values.data)[0].region
    with pytest.raises(InputError, match="unknown atlas region"):
        region_peak(values, "Nowhere")


def test_captioned_snapshot(tmp_path):
    image = np.full((50, 80, 4), 120, np.uint8)
    out = captioned(image, ["predicted age 61.2 y", "model: bundled"])
    assert out.shape[1] == 80 and out.shape[0] > 50 + 2 * CAPTION_FONT_PX
    np.testing.assert_array_equal(out[:50], image[..., :3])
    band = out[50:]
    assert band.max() > 200 and (band == 0).mean() > 0.5  # white text on black
    path = save_png(out, tmp_path / "view.png")
    np.testing.assert_array_equal(np.asarray(Image.open(path)), out)
    with pytest.raises(FileExistsError):
        save_png(out, path)
    with pytest.raises(ValueError, match="png"):
        save_png(out, tmp_path / "view.jpg")
    assert [p.name for p in tmp_path.iterdir()] == ["view.png"]  # no partial files left


# ------------------------------------------------------------------ group outputs (third break test B4)
def test_group_maps_never_share_a_file_with_each_other_or_the_other_outputs(tmp_path):
    """Groups "A" and "a" were pop_A and pop_a (one file on macOS and Windows); a group
    "difference" was written to the difference map's file; a 400-character group value
    ended the run, after every map was made, in "[Errno 36] File name too long"."""
    from napari_brainage.population import MAX_GROUP_PART_BYTES, PopulationOutputs

    long = "mild cognitive impairment, amyloid positive, APOE e4 carriers; " * 7
    outputs = PopulationOutputs.beside(tmp_path / "pop.nii.gz", None, ["difference", "healthy"])
    assert outputs.groups["healthy"].name == "pop_healthy.nii.gz"  # an ordinary name stays as it is
    assert outputs.groups["difference"] != outputs.difference
    assert outputs.groups["difference"].name.startswith("pop_difference_")
    names = ["A", "a", "Effect_Size", "regions", long, "Ünïcødé", "控制", "a/b", "a_b"]
    files = [path.name for path in PopulationOutputs.beside(tmp_path / "pop.nii.gz", None, names).all()]
    assert len({name.casefold() for name in files}) == len(files) == len(names) + 2
    assert all(len(name.encode()) <= len("pop_.nii.gz") + MAX_GROUP_PART_BYTES for name in files)
    again = PopulationOutputs.beside(tmp_path / "pop.nii.gz", None, reversed(names))
    assert [p.name for p in again.all()] == files  # a group's file does not depend on the others' order
    with pytest.raises(InputError, match="would be one file"):
        PopulationOutputs.beside(tmp_path / "pop.nii.gz", tmp_path / "POP.nii.gz")


def test_a_numeric_group_column_groups_numbers_and_refuses_a_measurement():
    """ "3" and "3.0" were two groups; an age column made one group (of one subject) per age."""
    from napari_brainage.population import MAX_NUMERIC_GROUPS, group_values

    assert group_values(["3", "3.0", " 3", "0.50", "1e1"]) == {"3": "3", "3.0": "3", " 3": "3", "0.50": "0.5",
                                                               "1e1": "10"}
    assert group_values(["3", "3.0", "three"]) == {"3": "3", "3.0": "3.0", "three": "three"}  # categories
    ages = [f"{40 + i * 0.7:.1f}" for i in range(MAX_NUMERIC_GROUPS + 1)]
    with pytest.raises(InputError, match=r"--group-by 'age': the column holds numbers with 11 different values "
                                         r"\(40, 40.7, 41.4 ... 47\).*add a column that bins"):
        group_values(ages, "'age'")
    sites = [str(i % MAX_NUMERIC_GROUPS) for i in range(40)]  # site codes 0-9: groups
    assert len(set(group_values(sites).values())) == MAX_NUMERIC_GROUPS
