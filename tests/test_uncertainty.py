"""Prediction intervals (split conformal) and gap centiles: the guarantee, the card, the CLI."""

from __future__ import annotations

import csv
import json
import math
import shutil

import numpy as np
import pytest

from napari_brainage import uncertainty
from napari_brainage.errors import InputError, OptionError
from napari_brainage.inference import AgeResult, load_model, predict_age
from napari_brainage.io import load_volume
from napari_brainage.model.card import ModelCard, ModelError, read_card, write_card
from napari_brainage.options import RunOptions
from napari_brainage.report import format_result
from napari_brainage.uncertainty import Calibration, check_level, coverage


def _calibration(n: int, seed: int = 0, skew: float = 0.0) -> Calibration:
    rng = np.random.default_rng(seed)
    ages = rng.uniform(45, 80, n)
    errors = rng.standard_t(4, n) * 3.0 + skew * ages
    return Calibration(ages=tuple(ages), predicted=tuple(ages + errors), source="test")


@pytest.mark.parametrize("level", [0.8, 0.9, 0.95])
def test_intervals_hold_the_nominal_share_of_new_subjects(level):
    """Split conformal: coverage >= level and <= level + 1/(n+1), for heavy-tailed
    errors the interval knows nothing about (Student t, 4 degrees of freedom)."""
    calibration = _calibration(200, seed=1)
    rng = np.random.default_rng(2)
    ages = rng.uniform(45, 80, 40_000)
    predicted = ages + rng.standard_t(4, ages.size) * 3.0
    low, high = calibration.interval(predicted, level)
    covered = coverage(ages, low, high)
    # The guarantee is over calibration sets; for one set, +-3 binomial sds of n = 200.
    slack = 3 * math.sqrt(level * (1 - level) / 200)
    assert level - slack <= covered <= level + 1 / 201 + slack
    # A wider level gives a wider interval.
    assert calibration.half_width(level) < calibration.half_width(min(level + 0.04, 0.99))


def test_the_half_width_is_the_conformal_order_statistic():
    calibration = Calibration(ages=tuple(range(60)), predicted=tuple(a + (i % 7) for i, a in enumerate(range(60))))
    residuals = np.sort(np.abs(np.arange(60) % 7))
    assert calibration.half_width(0.9) == residuals[math.ceil(61 * 0.9) - 1]
    assert calibration.interval(70.0, 0.9) == (70.0 - residuals[54], 70.0 + residuals[54])
    # 60 subjects cannot give a 99 % interval: ceil(61 x 0.99) = 61 > 60.
    assert calibration.half_width(0.99) == math.inf


def test_the_gap_centile_ranks_among_the_calibration_gaps():
    calibration = _calibration(101, seed=3)
    gaps = calibration.corrected_gaps(0.9, 6.0)
    assert calibration.centile(float(gaps[50]), 0.9, 6.0) == pytest.approx(50.0)  # the median: 50th
    assert calibration.centile(gaps[0] - 10, 0.9, 6.0) == 0.0
    assert calibration.centile(gaps[-1] + 10, 0.9, 6.0) == 100.0
    assert calibration.centile(1.0, 0.9, 6.0) < calibration.centile(2.0, 0.9, 6.0)


def test_bad_calibrations_and_levels_are_refused_with_the_reason():
    with pytest.raises(InputError, match="at least 50"):
        Calibration(ages=(1.0,) * 10, predicted=(1.0,) * 10)
    with pytest.raises(InputError, match="60 ages but 59"):
        Calibration(ages=(1.0,) * 60, predicted=(1.0,) * 59)
    with pytest.raises(InputError, match="finite"):
        Calibration(ages=(1.0,) * 59 + (math.nan,), predicted=(1.0,) * 60)
    with pytest.raises(OptionError, match=r"write 0\.9"):
        check_level(90)
    # A percentage is hinted at only where a value reads as one (1.5 was told "for 1.5 % write 0.015").
    for level, said in [(90, r"got 90 \(for 90 % write 0\.9\)$"), (15, r"got 15 \(for 15 % write 0\.15\)$"),
                        (1.5, r"got 1\.5 \(a share of the subjects: 0\.9 for a 90 % interval\)$"),
                        (100, r"got 100 \(a share"), (0, "got 0$"), (-1, "got -1$"), (1, "got 1$")]:
        with pytest.raises(OptionError, match=said):
            check_level(level)
    with pytest.raises(InputError, match="between 0 and 1"):
        RunOptions(interval_level=1.0)


def test_the_calibration_travels_in_the_model_card(tmp_path):
    card = ModelCard(calibration=_calibration(60))
    write_card(card, tmp_path)
    read = read_card(tmp_path)
    assert read.calibration == card.calibration
    assert read.calibration.half_width() == card.calibration.half_width()
    # Cards written before calibration existed read as uncalibrated.
    data = json.loads((tmp_path / "model_card.json").read_text())
    del data["calibration"]
    (tmp_path / "model_card.json").write_text(json.dumps(data))
    assert read_card(tmp_path).calibration is None
    # A damaged calibration names the card.
    data["calibration"] = {"ages": [60.0] * 3, "predicted": [61.0] * 3}
    (tmp_path / "model_card.json").write_text(json.dumps(data))
    with pytest.raises(ModelError, match="model_card.json.*at least 50"):
        read_card(tmp_path)


@pytest.fixture
def calibrated_model(tiny_model, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    card = read_card(folder)
    card.calibration = _calibration(80, seed=4)
    write_card(card, folder)
    return folder


def test_a_calibrated_model_gives_every_age_an_interval_and_centile(calibrated_model, tiny_cohort):
    model, device = load_model(calibrated_model, "cpu")
    row = next(csv.DictReader(open(tiny_cohort)))
    volume = load_volume(tiny_cohort.parent / row["path"])
    result = predict_age(volume, model, device, age=float(row["age"]), interval_level=0.8)
    q = model.card.calibration.half_width(0.8)
    assert result.interval_low == pytest.approx(result.predicted_age - q)
    assert result.interval_high == pytest.approx(result.predicted_age + q)
    assert result.interval_level == 0.8
    assert result.gap_centile == pytest.approx(model.card.calibration.centile(
        result.corrected_gap, model.card.bias_slope, model.card.bias_intercept))
    panel = format_result(result)
    assert f"80 % interval {result.interval_low:.1f}\N{EN DASH}{result.interval_high:.1f} y" in panel
    assert "centile)" in panel.splitlines()[-1]
    # Without an age: an interval, no centile.
    alone = predict_age(volume, model, device)
    assert alone.interval_low is not None and alone.gap_centile is None
    assert "centile" not in format_result(alone)


def test_an_uncalibrated_model_says_nothing_of_intervals(tiny_model, tiny_cohort):
    model, device = load_model(tiny_model, "cpu")
    volume = load_volume(next(tiny_cohort.parent.glob("sub-*.nii.gz")))
    result = predict_age(volume, model, device, age=60.0)
    assert result.interval_low is None and result.gap_centile is None
    assert "interval" not in format_result(result)
    assert AgeResult.FIELDS.index("interval_low") == AgeResult.FIELDS.index("predicted_age") + 1


def test_cli_calibrate_writes_the_card_and_predict_writes_intervals(tiny_model, tiny_cohort, tmp_path, monkeypatch,
                                                                    capsys):
    from napari_brainage.cli import main

    monkeypatch.setattr(uncertainty, "MIN_CALIBRATION_SUBJECTS", 10)
    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    # The tiny model's own cohort is refused as calibration data (its training scans) ...
    refused = main(["calibrate", str(tiny_cohort), "--model", str(folder)])
    assert refused == 2 and "12 calibration subject(s) are scans the model was trained on" in capsys.readouterr().err
    # ... so the card forgets where it was trained, and the cohort stands in for held-out subjects.
    card = read_card(folder)
    card.training["predictor"]["data"] = str(tmp_path / "gone.csv")
    card.training["predictor"].pop("tables", None)
    write_card(card, folder)
    kept = tmp_path / "calibration.csv"
    # A check that cannot be done is refused, unless the user says so (third break test B5).
    assert main(["calibrate", str(tiny_cohort), "--model", str(folder), "--out", str(kept)]) == 2
    assert f"cannot check for training scans among the calibration subjects: {tmp_path / 'gone.csv'} not found" \
        in capsys.readouterr().err
    assert main(["calibrate", str(tiny_cohort), "--model", str(folder), "--out", str(kept),
                 "--source", "tiny cohort, seed 4242", "--skip-training-check"]) == 0
    said = capsys.readouterr()
    assert (f"not checked for training scans among the subjects (--skip-training-check): "
            f"{tmp_path / 'gone.csv'} not found") in said.err
    card = read_card(folder)
    rows = list(csv.DictReader(open(kept)))
    assert card.calibration.n == 12 == len(rows)
    assert card.calibration.source == "tiny cohort, seed 4242"
    np.testing.assert_allclose(card.calibration.predicted, [float(r["predicted_age"]) for r in rows], atol=1e-3)
    assert "90 % +-" in said.out
    # Asked before replacing a calibration.
    assert main(["calibrate", str(tiny_cohort), "--model", str(folder)]) == 2
    assert "already calibrated" in capsys.readouterr().err

    results = tmp_path / "results.csv"
    assert main(["predict", str(tiny_cohort), "--model", str(folder), "--out", str(results),
                 "--interval-level", "0.8"]) == 0
    for row in csv.DictReader(open(results)):
        low, high, predicted = float(row["interval_low"]), float(row["interval_high"]), float(row["predicted_age"])
        assert row["interval_level"] == "0.800"
        assert high - low == pytest.approx(2 * card.calibration.half_width(0.8), abs=2e-3)
        assert low < predicted < high and 0 <= float(row["gap_centile"]) <= 100
    assert main(["predict", str(tiny_cohort), "--model", str(folder), "--out", str(tmp_path / "x.csv"),
                 "--interval-level", "90"]) == 2
    assert "error: --interval-level must lie between 0 and 1, got 90 (for 90 % write 0.9)" in capsys.readouterr().err


def test_calibrate_out_holds_the_new_calibrations_intervals_and_centiles(calibrated_model, tiny_cohort, tmp_path,
                                                                          monkeypatch, capsys):
    """A recalibration's --out table had the replaced calibration's intervals and centiles
    (+-4.81 y among 300 subjects where the new one gave +-5.0 among 52): its subjects were
    predicted with the card as it was."""
    from napari_brainage.cli import main

    monkeypatch.setattr(uncertainty, "MIN_CALIBRATION_SUBJECTS", 10)
    card = read_card(calibrated_model)
    old = card.calibration
    card.training["predictor"]["data"] = str(tmp_path / "gone.csv")  # its cohort stands in for held-out subjects
    card.training["predictor"].pop("tables", None)
    write_card(card, calibrated_model)
    kept = tmp_path / "calibration.csv"
    assert main(["calibrate", str(tiny_cohort), "--model", str(calibrated_model), "--out", str(kept), "--overwrite",
                 "--skip-training-check", "--preprocess", "none", "--device", "cpu"]) == 0
    capsys.readouterr()
    card = read_card(calibrated_model)
    new = card.calibration
    assert new.n == 12 and new.half_width(0.9) != pytest.approx(old.half_width(0.9), abs=1e-2)
    rows = list(csv.DictReader(open(kept)))
    assert len(rows) == 12
    for row in rows:
        predicted = float(row["predicted_age"])
        assert row["interval_level"] == "0.900"
        assert float(row["interval_high"]) - predicted == pytest.approx(new.half_width(0.9), abs=2e-3)
        if row["gap_centile"]:  # the subject is one of the 12: its gap is one of theirs, to 3 decimals (ties)
            gap = float(row["corrected_gap"])
            low, high = (new.centile(gap + d, card.bias_slope, card.bias_intercept) for d in (-2e-3, 2e-3))
            assert low - 1e-3 <= float(row["gap_centile"]) <= high + 1e-3
    assert any(row["gap_centile"] for row in rows)


def test_calibrate_refuses_too_few_subjects_before_predicting_any(tiny_model, tiny_cohort, tmp_path, cli_in_process):
    """It predicted every subject, then said 50 were needed (a second user's report)."""
    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    refused = cli_in_process("calibrate", tiny_cohort, "--model", folder)
    assert refused.returncode == 2
    assert f"calibration needs at least {uncertainty.MIN_CALIBRATION_SUBJECTS} subjects with an age; got 12" \
        in refused.stderr
    assert "calibrate 1/" not in refused.stderr + refused.stdout
    assert read_card(folder).calibration is None
