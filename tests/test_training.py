"""Training smoke tests on a tiny cohort: one epoch, checkpoints, resume, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import napari_brainage
from napari_brainage.model.card import CARD_FILE, NOISE_MODEL_FILE, PREDICTOR_FILE, InputSpec, read_card
from napari_brainage.model.weights import sha256
from napari_brainage.training.config import TrainConfig
from napari_brainage.training.data import load_cohort, split_by_subject
from napari_brainage.training.predictor import train_predictor


def test_split_is_by_subject_deterministic_and_disjoint():
    subjects = [f"sub-{i:03d}" for i in range(100)]
    train, val = split_by_subject(subjects, 0.2, seed=3)
    assert len(val) == 20 and len(train) == 80 and not set(train) & set(val)
    again = split_by_subject(subjects, 0.2, seed=3)
    np.testing.assert_array_equal(train, again[0])
    assert not np.array_equal(val, split_by_subject(subjects, 0.2, seed=4)[1])
    # A subject's side does not depend on who else is in the cohort.
    smaller_train, smaller_val = split_by_subject(subjects[:50], 0.2, seed=3)
    assert {subjects[i] for i in smaller_val} <= {subjects[i] for i in val} | {subjects[i] for i in train}


def test_one_epoch_smoke_run_writes_a_complete_model_folder(tiny_model):
    card = read_card(tiny_model)
    for name in (PREDICTOR_FILE, NOISE_MODEL_FILE):
        assert card.weights[name] == sha256(tiny_model / name)
    assert card.training["predictor"]["epochs"] == 1
    assert np.isfinite(card.training["predictor"]["best_validation_mae"])
    assert card.training["noise_model"]["noise_max_sd"] == 0.3
    assert (tiny_model / "checkpoints" / "predictor_last.pt").exists()
    assert 40 < card.age_mean < 85 and card.age_sd > 0


def test_training_resumes_from_its_checkpoint(tiny_cohort, tmp_path):
    cohort = load_cohort(tiny_cohort)
    messages: list[str] = []
    config = TrainConfig(epochs=1, batch_size=4, val_fraction=0.25, seed=2)
    train_predictor(cohort, tmp_path, config, progress=messages.append)
    with pytest.raises(FileExistsError, match="pass --resume"):
        train_predictor(cohort, tmp_path, config, progress=messages.append)
    messages.clear()
    train_predictor(cohort, tmp_path, TrainConfig(epochs=2, batch_size=4, val_fraction=0.25, seed=2,
                                                  resume=True), progress=messages.append)
    assert any("resuming predictor training after epoch 1" in m for m in messages)
    assert sum("predictor epoch" in m for m in messages) == 1  # only epoch 2 ran
    assert read_card(tmp_path).training["predictor"]["epochs"] == 2


def test_a_time_limit_stops_after_the_epoch_that_crosses_it_and_the_card_says_how_many_ran(
        tiny_cohort, tiny_model, tmp_path):
    from napari_brainage.errors import OptionError
    from napari_brainage.training.noise_model import train_noise_model

    cohort = load_cohort(tiny_cohort)
    messages: list[str] = []
    # A limit every epoch crosses: the first epoch completes (an epoch is never cut), then it stops.
    config = TrainConfig(epochs=3, batch_size=4, val_fraction=0.25, seed=2, max_minutes=1e-6)
    card = train_predictor(cohort, tmp_path / "p", config, progress=messages.append)
    assert sum("predictor epoch" in m for m in messages) == 1
    assert any("stopped after epoch 1 of 3: the 1e-06-minute limit has passed" in m for m in messages)
    assert card.training["predictor"]["epochs_run"] == 1 and card.training["predictor"]["epochs"] == 3
    assert card.weights[PREDICTOR_FILE] == sha256(tmp_path / "p" / PREDICTOR_FILE)
    noise = train_noise_model(cohort, tiny_model, tmp_path / "n",
                              TrainConfig(epochs=2, batch_size=4, val_fraction=0.25, max_minutes=1e-6),
                              progress=messages.append)
    assert noise.training["noise_model"]["epochs_run"] == 1
    # Without a limit every epoch runs and the card says so.
    assert read_card(tiny_model).training["noise_model"]["epochs_run"] == 1
    with pytest.raises(OptionError, match="must be positive"):
        TrainConfig(max_minutes=0)


@pytest.mark.parametrize("field, value", [("epochs", 2.5), ("batch_size", 4.0), ("seed", "1"), ("epochs", True)])
def test_counts_that_are_not_whole_numbers_are_refused_when_the_config_is_made(field, value):
    """epochs=2.5 was accepted and crashed the training loop after the cohort had
    loaded, leaving an empty model folder (a new user's API test)."""
    from napari_brainage.errors import OptionError

    with pytest.raises(OptionError, match=f"{field} must be a whole number, got {value!r}"):
        TrainConfig(**{field: value})


@pytest.mark.parametrize("noise_augment", [0.0, 1.0])
def test_training_leaves_batch_norm_statistics_of_clean_scans(tiny_cohort, tmp_path, noise_augment):
    # Running averages lag behind weights that move (from scratch: evaluation read 17 y off
    # where training read 8 y), and noisy batches would feed them noisy statistics.
    import torch

    from napari_brainage.model.bundle import BrainAgeModel
    from napari_brainage.training.loop import batches

    cohort = load_cohort(tiny_cohort)
    config = TrainConfig(epochs=1, batch_size=4, val_fraction=0.25, seed=2, noise_augment=noise_augment)
    train_predictor(cohort, tmp_path, config, progress=lambda message: None)
    model = BrainAgeModel.load(tmp_path).predictor
    conv, norm = model.features[0], model.features[1]
    assert isinstance(conv, torch.nn.Conv3d) and isinstance(norm, torch.nn.BatchNorm3d)
    # The first batch norm's input is the first convolution's output, which no statistics touch:
    # its running statistics must be the mean over the clean training batches of their
    # channel means and variances (not an average that noisy batches took part in).
    train, _ = split_by_subject(cohort.subjects, 0.25, 2)
    with torch.no_grad():
        outputs = [conv(torch.from_numpy(cohort.scans[b])[:, None]).transpose(0, 1).flatten(1)
                   for b in batches(train, 4, None)]
    torch.testing.assert_close(norm.running_mean, torch.stack([o.mean(1) for o in outputs]).mean(0),
                               rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(norm.running_var, torch.stack([o.var(1) for o in outputs]).mean(0),
                               rtol=1e-4, atol=1e-6)


def test_fine_tuning_starts_from_the_given_predictor_and_keeps_its_age_scale(tiny_cohort, tiny_model, tmp_path):
    import torch

    from napari_brainage.model.bundle import BrainAgeModel

    cohort = load_cohort(tiny_cohort)
    start = BrainAgeModel.load(tiny_model)
    messages: list[str] = []
    # lr 0: the weights cannot move, so the result must be the starting predictor
    # (batch-norm running statistics aside, which training updates without the lr).
    config = TrainConfig(epochs=1, batch_size=4, val_fraction=0.25, seed=1, learning_rate=0.0,
                         weight_decay=0.0, init_from=str(tiny_model), blur_augment=1.0)
    card = train_predictor(cohort, tmp_path, config, progress=messages.append)
    assert any("fine-tuning the predictor of" in m for m in messages)
    assert (card.age_mean, card.age_sd) == (start.card.age_mean, start.card.age_sd)
    tuned = BrainAgeModel.load(tmp_path)
    for name, weight in start.predictor.state_dict().items():
        if "running" not in name and "num_batches" not in name:
            assert torch.equal(weight, tuned.predictor.state_dict()[name]), name
    assert read_card(tmp_path).training["predictor"]["init_from"] == str(tiny_model)


def test_an_average_pooling_predictor_starts_from_a_max_pooling_one_and_says_so(tiny_cohort, tiny_model, tmp_path):
    import torch

    from napari_brainage.model.bundle import BrainAgeModel
    from napari_brainage.model.networks import SFCNRegressor

    config = TrainConfig(epochs=1, batch_size=4, val_fraction=0.25, seed=1, learning_rate=0.0,
                         weight_decay=0.0, init_from=str(tiny_model), pool="avg")
    card = train_predictor(load_cohort(tiny_cohort), tmp_path, config, progress=lambda _: None)
    assert card.predictor_pool == "avg" and read_card(tmp_path).predictor_pool == "avg"
    start, tuned = BrainAgeModel.load(tiny_model), BrainAgeModel.load(tmp_path)
    assert start.card.predictor_pool == "max"  # a card without the field: SFCN's max-pooling
    pools = {type(m) for m in tuned.predictor.modules() if "Pool" in type(m).__name__}
    assert pools == {torch.nn.AvgPool3d}
    for name, weight in start.predictor.state_dict().items():  # same weights, other pooling
        if "running" not in name and "num_batches" not in name:
            assert torch.equal(weight, tuned.predictor.state_dict()[name]), name
    # Why average pooling: a max over noisy voxels grows with the noise, a mean does not.
    x = torch.zeros(1, 1, 8, 8, 8)
    noisy = x + torch.randn(x.shape, generator=torch.Generator().manual_seed(0)) * 0.5
    assert float(torch.nn.MaxPool3d(2)(noisy).mean()) > 0.5
    assert abs(float(torch.nn.AvgPool3d(2)(noisy).mean())) < 0.1
    with pytest.raises(ValueError, match="pool"):
        SFCNRegressor(pool="median")


@pytest.mark.parametrize("pool", ["max", "avg"])
def test_last_layer_contributions_sum_to_the_prediction_and_bound_its_change(pool):
    import torch

    from napari_brainage.model.card import NoiseSpec
    from napari_brainage.model.networks import NoiseUNet, SFCNRegressor
    from napari_brainage.training.objective import clean_target, noise_terms

    torch.manual_seed(0)
    predictor = SFCNRegressor(pool=pool).eval()
    x = torch.rand(2, 1, 80, 96, 80)
    parts = predictor.contributions(x)
    assert parts.shape == (2, 64 * 2 * 3 * 2)  # 64 channels at the head's 2 x 3 x 2 locations
    torch.testing.assert_close(parts.sum(1) + predictor.head.bias, predictor(x), rtol=1e-4, atol=1e-5)
    # The "contributions" loss is the sum of absolute unit changes: never below the
    # change of the age it bounds (lambda 0, the same noise draw for both).
    noise_model = NoiseUNet()

    def loss_terms(target: str) -> torch.Tensor:
        spec = NoiseSpec(lam=0.0, max_sd=1.0, target=target)
        with torch.no_grad():
            terms, mask = noise_terms(predictor, noise_model, x, clean_target(predictor, x, spec), spec, 10.0,
                                      torch.Generator().manual_seed(3))
        assert mask.shape == x.shape and (terms > 0).all()
        return terms

    bound, change = loss_terms("contributions"), loss_terms("prediction")
    assert (bound >= change - 1e-5).all()
    assert float(bound.min()) > 1.5 * float(change.max())  # units move more than the age they sum to


def test_fine_tuning_from_a_folder_that_is_no_model_writes_nothing(tiny_cohort, tmp_path):
    result = subprocess.run([sys.executable, "-m", "napari_brainage.cli", "train", "predictor", "--data",
                             str(tiny_cohort), "--out", str(tmp_path / "out"), "--init", str(tmp_path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "no model_card.json" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_noise_model_into_another_folder_copies_the_predictor(tiny_cohort, tiny_model, tmp_path):
    from napari_brainage.model.bundle import BrainAgeModel
    from napari_brainage.model.card import NoiseSpec
    from napari_brainage.training.noise_model import train_noise_model

    cohort = load_cohort(tiny_cohort)
    train_noise_model(cohort, tiny_model, tmp_path, TrainConfig(epochs=1, batch_size=4, val_fraction=0.25),
                      NoiseSpec(lam=0.1, max_sd=0.5, target="age"), progress=lambda _: None)
    model = BrainAgeModel.load(tmp_path, need_noise_model=True)
    assert model.card.noise.target == "age" and model.card.noise.lam == 0.1
    assert (tmp_path / PREDICTOR_FILE).read_bytes() == (tiny_model / PREDICTOR_FILE).read_bytes()
    # The contributions target trains through the same loop and is recorded in the card.
    card = train_noise_model(cohort, tiny_model, tmp_path / "units", TrainConfig(epochs=1, batch_size=4,
                             val_fraction=0.25), NoiseSpec(target="contributions"), progress=lambda _: None)
    assert card.noise.target == "contributions" and np.isfinite(card.training["noise_model"]["best_validation_loss"])
    assert read_card(tmp_path / "units").noise.target == "contributions"


def test_noise_model_fine_tuning_starts_from_the_given_noise_model(tiny_cohort, tiny_model, tmp_path):
    import torch

    from napari_brainage.training.noise_model import train_noise_model

    # With a learning rate of 0 the saved weights are the starting weights, bit for bit;
    # flipped batches (and their recomputed targets) must run without error on the way.
    config = TrainConfig(epochs=1, batch_size=4, val_fraction=0.25, learning_rate=0.0,
                         init_from=str(tiny_model), flip=True)
    train_noise_model(load_cohort(tiny_cohort), tiny_model, tmp_path, config, progress=lambda _: None)
    start = torch.load(tiny_model / NOISE_MODEL_FILE, weights_only=True)
    tuned = torch.load(tmp_path / NOISE_MODEL_FILE, weights_only=True)
    assert start.keys() == tuned.keys() and all(torch.equal(start[k], tuned[k]) for k in start)
    training = read_card(tmp_path).training
    assert training["noise_model"]["flip"] is True and training["noise_model"]["init_from"] == str(tiny_model)
    # The starting model's own training is kept, so the card still says how the whole model was made.
    assert training["noise_model_start"] == read_card(tiny_model).training["noise_model"]


def test_noise_model_init_with_another_head_says_what_to_change(tiny_cohort, tiny_model, tmp_path):
    from napari_brainage.model.card import ModelError
    from napari_brainage.training.noise_model import train_noise_model

    config = TrainConfig(epochs=1, batch_size=4, val_fraction=0.25, init_from=str(tiny_model))
    with pytest.raises(ModelError, match="trained without --full-resolution-head; drop --full-resolution-head"):
        train_noise_model(load_cohort(tiny_cohort), tiny_model, tmp_path / "out", config,
                          progress=lambda _: None, full_resolution_head=True)
    assert not (tmp_path / "out").exists()


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "napari_brainage.cli", *args],
                          capture_output=True, text=True, timeout=600)


def test_cli_train_predictor_then_noise_model_into_the_same_folder(tiny_cohort, tmp_path):
    common = ["--data", str(tiny_cohort), "--out", str(tmp_path), "--epochs", "1", "--batch-size", "4",
              "--val-fraction", "0.25"]
    first = run_cli("train", "predictor", *common)
    assert first.returncode == 0, first.stderr
    assert "predictor epoch 1/1" in first.stdout
    second = run_cli("train", "noise-model", *common, "--predictor", str(tmp_path))
    assert second.returncode == 0, second.stderr
    card = json.loads((tmp_path / CARD_FILE).read_text())
    assert set(card["weights"]) == {PREDICTOR_FILE, NOISE_MODEL_FILE}
    # The defaults are the bundled noise model's recipe (what an outside user retrains with).
    bundled = read_card(Path(napari_brainage.__file__).parent / "bundled_model").noise
    assert (card["noise"]["lam"], card["noise"]["brain_only"]) == (bundled.lam, bundled.brain_only) == (0.5, True)


@pytest.mark.parametrize("args, message", [
    (["predictor", "--data", "missing.csv", "--out", "m"], "no such participants file"),
    (["predictor", "--out", "m"], "required: --data"),
    (["noise-model", "--data", "x.csv", "--out", "m"], "required: --predictor"),
    (["predictor", "--data", "x.csv", "--out", "m", "--epochs", "0"], "--epochs must be at least 1"),
    (["predictor", "--data", "x.csv", "--out", "m", "--device", "tpu"], "invalid choice: 'tpu'"),
    (["predictor", "--data", "x.csv", "--out", "m", "--blur-augment", "-1"], "--blur-augment must not be negative"),
    # Checked before any scan is loaded: x.csv does not exist, and that is not what is said.
    (["noise-model", "--data", "x.csv", "--out", "m", "--predictor", "p", "--min-sd", "0.4"],
     "--min-sd must be at least 0 and below --max-sd (0.3), got 0.4"),
    (["predictor", "--data", "x.csv", "--out", "m", "--val-fraction", "1"], "--val-fraction must be between 0 and 1"),
    (["predictor", "--data", "x.csv", "--out", "m", "--lr", "-0.1"], "--lr must not be negative"),
    (["predictor", "--data", "x.csv", "--out", "m", "--pool", "median"], "invalid choice: 'median'"),
    (["noise-model", "--data", "x.csv", "--out", "m", "--predictor", "p", "--noise-budget", "1.5"],
     "--noise-budget must be at least 0 (off) and below 1, got 1.5"),
])
def test_cli_train_rejects_bad_arguments(tmp_path, monkeypatch, cli_in_process, args, message):
    monkeypatch.chdir(tmp_path)
    result = cli_in_process("train", *args)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_patchy_noise_is_local_and_bounded():
    import torch

    from napari_brainage.training.augment import patchy_noise

    torch.manual_seed(0)
    x = torch.zeros(2, 1, 32, 40, 32)
    noisy = patchy_noise(x, 0.3)
    assert noisy.shape == x.shape
    # Noise sd varies in space (patches), never above the maximum.
    local_sd = noisy.unfold(2, 8, 8).unfold(3, 8, 8).unfold(4, 8, 8).std(dim=(-1, -2, -3))
    assert float(local_sd.max()) < 0.3 * 1.3
    assert float(local_sd.max()) > 2 * float(local_sd.min())


def test_blur_augmentation_matches_scipy_and_keeps_intensity():
    import torch
    from scipy import ndimage

    from napari_brainage.training.augment import gaussian_blur

    rng = np.random.default_rng(0)
    volume = rng.random((1, 1, 20, 24, 20)).astype(np.float32)
    blurred = gaussian_blur(torch.from_numpy(volume), 0.8)[0, 0].numpy()
    # truncate chosen so scipy's kernel radius equals ours (ceil(3 sigma) = 3 voxels).
    expected = ndimage.gaussian_filter(volume[0, 0], 0.8, mode="nearest", truncate=3 / 0.8)
    assert np.abs(blurred - expected)[3:-3, 3:-3, 3:-3].max() < 1e-5
    assert blurred.mean() == pytest.approx(volume.mean(), rel=1e-3)
    assert blurred.std() < 0.6 * volume.std()          # it did blur
    unblurred = torch.from_numpy(volume)
    assert torch.equal(gaussian_blur(unblurred, 0.0), unblurred)


def test_noise_relative_to_contrast_spares_flat_tissue_and_hits_edges():
    import torch

    from napari_brainage.model.card import NoiseSpec
    from napari_brainage.training.objective import local_contrast, noisy_input

    x = torch.ones(1, 1, 16, 16, 16)
    x[..., 8:, :, :] = 2.0                        # one edge between two flat tissues
    contrast = local_contrast(x)
    assert float(contrast[..., 2:6, :, :].abs().max()) < 1e-3      # flat: no contrast
    assert float(contrast[..., 7:9, :, :].min()) > 1.0              # the edge carries it all
    assert float(contrast.mean()) == pytest.approx(1.0, rel=1e-4)   # scaled to mean 1 inside
    mask = torch.ones_like(x)                     # B = 1: the most noise everywhere
    spec = NoiseSpec(max_sd=0.3, relative_to_contrast=True)
    noise = noisy_input(x, mask, spec, torch.Generator().manual_seed(0)) - x
    assert float(noise[..., 2:6, :, :].abs().max()) < 1e-3
    assert 0.3 < float(noise[..., 7:9, :, :].std()) < 0.3 * float(contrast.max()) * 1.2
    absolute = noisy_input(x, mask, NoiseSpec(max_sd=0.3), torch.Generator().manual_seed(0)) - x
    assert float(absolute[..., 2:6, :, :].std()) == pytest.approx(0.3, rel=0.1)


def test_intensity_perturbation_changes_each_scan_coherently_where_the_mask_says():
    import torch

    from napari_brainage.errors import OptionError
    from napari_brainage.model.card import NoiseSpec
    from napari_brainage.training.objective import noisy_input

    x = torch.zeros(64, 1, 8, 8, 8)
    x[:, :, 2:6, 2:6, 2:6] = 2.0                  # a brain of 64 voxels in an empty box
    mask = torch.zeros_like(x)
    mask[:, :, 2:4] = 1.0                         # half the brain may change, by up to 30 %
    mask[:, :, 4:6] = 0.5                         # the other half by up to 15 %
    spec = NoiseSpec(max_sd=0.3, perturbation="intensity")
    noisy = noisy_input(x, mask, spec, torch.Generator().manual_seed(0))
    assert torch.equal(noisy[x == 0], x[x == 0])  # the background stays empty
    ratio = noisy / x.clamp_min(1e-9) - 1
    full, half = ratio[:, 0, 2:4, 2:6, 2:6].flatten(1), ratio[:, 0, 4:6, 2:6, 2:6].flatten(1)
    # One change per scan: every voxel of a region moves by the same ratio, half as much where B is half.
    assert torch.allclose(full, full[:, :1].expand_as(full), atol=1e-6)
    torch.testing.assert_close(half, full / 2, atol=1e-6, rtol=1e-5)
    assert float(full.abs().max()) <= 0.3 + 1e-6
    signs = torch.sign(full[:, 0])
    assert 0.25 < float((signs > 0).float().mean()) < 0.75   # brighter or darker, scan by scan
    assert float(full.abs().mean()) == pytest.approx(0.15, rel=0.25)  # strength u ~ U(0, 1) x 0.3
    assert NoiseSpec().perturbation == "noise"    # U-Noise stays the default
    with pytest.raises(OptionError, match="perturbation"):
        NoiseSpec(perturbation="blur")


def test_brain_only_noise_spares_the_background_and_rewards_only_the_brain():
    import torch

    from napari_brainage.model.card import NoiseSpec
    from napari_brainage.training.objective import noise_reward, noisy_input

    x = torch.zeros(2, 1, 8, 8, 8)
    x[:, :, 2:6, 2:6, 2:6] = 1.0                  # a brain of 64 voxels in an empty box
    mask = torch.full_like(x, 0.5)
    mask[x == 0] = 1e-3                           # little noise outside: no matter with brain_only
    spec = NoiseSpec(max_sd=0.3, brain_only=True)
    noisy = noisy_input(x, mask, spec, torch.Generator().manual_seed(0))
    assert torch.equal(noisy[x == 0], x[x == 0])
    assert float((noisy - x)[x != 0].std()) == pytest.approx(0.15, rel=0.2)
    np.testing.assert_allclose(noise_reward(mask, x, spec).numpy(), np.log(0.5), rtol=1e-5)
    whole_scan = NoiseSpec(brain_only=False)
    everywhere = noise_reward(mask, x, whole_scan)  # the background's log(1e-3) drags it down
    assert float(everywhere[0]) < np.log(0.5) - 1
    assert float((noisy_input(x, mask, whole_scan, torch.Generator().manual_seed(0)) - x)[x == 0].abs().max()) > 0


def test_a_noise_budget_fixes_the_mean_and_keeps_where_the_mask_puts_noise():
    import torch

    from napari_brainage.model.card import NoiseSpec
    from napari_brainage.errors import OptionError
    from napari_brainage.training.objective import brain_mean, spend_budget

    x = torch.zeros(2, 1, 8, 8, 8)
    x[:, :, 2:6, 2:6, 2:6] = 1.0
    mask = torch.rand(x.shape, generator=torch.Generator().manual_seed(1)) * 0.2
    mask[1] *= 0.01                               # a second scan with 100x less noise asked for
    spent = spend_budget(mask, x, 0.3)
    np.testing.assert_allclose(brain_mean(spent, x).numpy(), [0.3, 0.3], rtol=1e-5)  # the same budget
    inside = x[0] != 0
    order = torch.argsort(mask[0][inside])
    assert torch.equal(torch.argsort(spent[0][inside])[-10:], order[-10:])  # the same ranking
    assert torch.equal(spend_budget(mask, x, 0.0), mask)  # off
    capped = spend_budget(torch.where(x > 0, 0.01, 0.0) + (x > 0) * (torch.arange(8.0) == 2).view(1, 1, 8, 1, 1),
                          x, 0.9)
    assert float(capped.max()) == 1.0             # a share over 1 is capped, never more noise than max_sd
    for bad in (-0.1, 1.0):
        with pytest.raises(OptionError, match="budget"):
            NoiseSpec(budget=bad)


def test_training_scans_are_prepared_like_inference_and_qc_failures_are_reported(tmp_path):
    """A raw (moved) scan is registered before training sees it, as inference would;
    trusting its header instead gives a different input; a non-brain volume fails
    quality control and is reported and left out, not silently learnt from;
    worker processes give the same arrays."""
    from scipy import ndimage
    from test_preprocess import _moved

    from napari_brainage.io import Volume, load_volume, save_volume
    from napari_brainage.samples import sample_path
    from napari_brainage.space.grid import to_model_input

    aligned = load_volume(sample_path("synthetic_age80"))
    moved, _ = _moved(aligned)
    junk = ndimage.gaussian_filter(np.random.default_rng(0).random((80, 80, 80)), 4).astype(np.float32) * 300
    save_volume(moved, tmp_path / "moved.nii.gz")
    save_volume(Volume(junk, np.diag([2.0, 2.0, 2.0, 1.0])), tmp_path / "junk.nii.gz")
    (tmp_path / "participants.csv").write_text("subject,path,age\nmoved,moved.nii.gz,80\njunk,junk.nii.gz,60\n")

    messages: list[str] = []
    cohort = load_cohort(tmp_path / "participants.csv", progress=messages.append)
    reference = to_model_input(aligned, InputSpec())
    brain = reference > 0

    def agreement(scan):
        return np.corrcoef(scan[brain], reference[brain])[0, 1]

    trusted = to_model_input(moved, InputSpec())  # the moved scan's header trusted
    assert agreement(cohort.scans[0]) > 0.85 and agreement(cohort.scans[0]) > agreement(trusted) + 0.3
    # Trusted through training's own loading, it fails quality control: nothing to learn from.
    with pytest.raises(ValueError, match="none of the 2 scans could be loaded"):
        load_cohort(tmp_path / "participants.csv", preprocessing="none")
    assert any(m.startswith("junk: error:") and "QC failed" in m for m in messages), messages
    # Registered, it is trained on (QC may warn of its resampling: kept).
    assert not any(m.startswith("moved: error") for m in messages)
    assert cohort.subjects == ["moved"] and len(cohort.scans) == 1 and [s for s, _ in cohort.failed] == ["junk"]
    assert "1 of 2 scans failed (listed above) and are left out: junk" in messages[-1]

    # Same scans, same order, from worker processes (ITK's single-threaded
    # registration there differs from the multi-threaded one in the last digits).
    in_workers = load_cohort(tmp_path / "participants.csv", workers=2)
    assert in_workers.subjects == cohort.subjects
    assert np.corrcoef(in_workers.scans[0].ravel(), cohort.scans[0].ravel())[0, 1] > 0.99
    with pytest.raises(ValueError, match="unknown preprocessing .*; choose from auto, register, none"):
        load_cohort(tmp_path / "participants.csv", preprocessing="maybe")


def test_several_participant_tables_are_trained_on_together(tiny_cohort, tmp_path):
    rows = tiny_cohort.read_text().splitlines()
    (tmp_path / "first.csv").write_text("\n".join(rows[:7]).replace(",sub-", f",{tiny_cohort.parent}/sub-") + "\n")
    (tmp_path / "second.csv").write_text("\n".join([rows[0], *rows[7:]]).replace(",sub-", f",{tiny_cohort.parent}/sub-")
                                         + "\n")
    one = load_cohort(tiny_cohort, limit=8)
    both = load_cohort([tmp_path / "first.csv", tmp_path / "second.csv"], limit=8)
    assert both.subjects == one.subjects and both.source == f"{tmp_path / 'first.csv'} + {tmp_path / 'second.csv'}"
    np.testing.assert_array_equal(both.scans, one.scans)
    # One table given twice is its scans once (they would sit on both sides of the split).
    twice = load_cohort([tiny_cohort, tiny_cohort], limit=20)
    assert len(twice.subjects) == 12
    no_age = tmp_path / "no_age.csv"
    no_age.write_text("subject,path\nx,x.nii.gz\n")
    with pytest.raises(ValueError, match="no_age.csv: training needs an 'age' column"):
        load_cohort([tiny_cohort, no_age])


def test_scans_that_fail_to_load_are_listed_and_left_out_of_training(tiny_cohort, tmp_path, monkeypatch, capsys):
    """Any failure of one scan (a statistical map, a crash in preparing another) is
    reported and the scan left out; training goes on with the rest, exit status 1;
    with no scan left, a clear error."""
    from test_cohort import crash_on, write_statistical_map

    from napari_brainage.cli import main
    from napari_brainage.inference import collect_inputs

    good = collect_inputs([tiny_cohort])[:3]
    write_statistical_map(tmp_path / "statmap.nii.gz")
    (tmp_path / "mixed.csv").write_text(
        "subject,path,age\n"
        f"{good[0].subject},{good[0].path},{good[0].age}\n"
        "statmap,statmap.nii.gz,50\n"
        f"crash,{good[1].path},60\n"
        f"{good[2].subject},{good[2].path},{good[2].age}\n")
    crash_on(monkeypatch, good[1].path.name, MemoryError())

    messages: list[str] = []
    cohort = load_cohort(tmp_path / "mixed.csv", progress=messages.append)
    assert cohort.subjects == [good[0].subject, good[2].subject]
    assert cohort.scans.shape[0] == 2 and list(cohort.ages) == [good[0].age, good[2].age]
    reference = load_cohort(tiny_cohort, limit=3)  # the same crash: the 2nd of these 3 is left out too
    assert reference.subjects == cohort.subjects
    np.testing.assert_array_equal(cohort.scans, reference.scans)
    reasons = dict(cohort.failed)
    assert sorted(reasons) == ["crash", "statmap"]
    # Each failure starts with the scan's path as the table gives it (QC named only the file).
    assert reasons["crash"] == f"{good[1].path}: processing failed (MemoryError)"
    assert reasons["statmap"].startswith(f"{tmp_path / 'statmap.nii.gz'}: ")
    assert "\n" not in reasons["statmap"] and len(reasons["statmap"]) <= 300 + len(str(tmp_path)) + 2
    assert f"crash: error: {reasons['crash']}" in messages
    assert "2 of 4 scans failed (listed above) and are left out: statmap, crash" in messages[-1]

    # The command: trains on the rest, says how many failed, exit status 1.
    extra = collect_inputs([tiny_cohort])[3]
    (tmp_path / "crash.csv").write_text(
        "subject,path,age\n" + "".join(f"{item.subject},{item.path},{item.age}\n" for item in (*good, extra)))
    code = main(["train", "predictor", "--data", str(tmp_path / "crash.csv"), "--out", str(tmp_path / "model"),
                 "--epochs", "1", "--batch-size", "2", "--val-fraction", "0.5"])
    out = capsys.readouterr().out
    assert code == 1
    assert (tmp_path / "model" / PREDICTOR_FILE).exists()
    assert f"{good[1].subject}: error: {good[1].path}: processing failed (MemoryError)" in out
    assert "trained on 3 of 4 scans" in out and "1 failed and were left out" in out

    (tmp_path / "bad.csv").write_text(f"subject,path,age\ncrash1,{good[1].path},60\n")
    with pytest.raises(ValueError, match=r"none of the 1 scans could be loaded \(first error: crash1: .*: "
                                         r"processing failed \(MemoryError\)\)"):
        load_cohort(tmp_path / "bad.csv")


def _t1_input():
    """The template's T1 as a model input (1, 1, 80, 96, 80), background 0."""
    import torch

    from napari_brainage.space.grid import model_input
    from napari_brainage.space.template import load_template

    kit = load_template(2)
    return torch.from_numpy(model_input(kit.t1 * kit.brain, InputSpec()))[None, None], kit


def test_remapped_tissue_levels_re_render_the_tissues_at_the_levels_asked():
    import torch

    from napari_brainage.space.grid import crop
    from napari_brainage.training.augment import T1_TISSUE_LEVELS, remap_tissue_levels

    x, kit = _t1_input()
    # The T1's own levels give the T1 back (after renormalisation).
    same = remap_tissue_levels(x, T1_TISSUE_LEVELS)
    assert torch.allclose(same, x, atol=1e-5)
    t2 = remap_tissue_levels(x, (1.0, 0.55, 0.4))[0, 0].numpy()
    level = {t: float(np.median(t2[crop(getattr(kit, t), InputSpec()) > 0.9])) for t in ("csf", "gm", "wm")}
    assert level["csf"] > level["gm"] > level["wm"]  # T2 ordering
    assert level["gm"] / level["wm"] == pytest.approx(0.55 / 0.4, rel=0.1)
    assert np.array_equal(t2 > 0, x[0, 0].numpy() > 0)  # background stays background
    assert t2[t2 > 0].mean() == pytest.approx(1.0, rel=1e-4)


def test_thick_slice_augmentation_blurs_one_axis_only():
    import torch

    from napari_brainage.training.augment import thick_slices

    # Detail along x and along z that do not mix: thick z slices keep every x edge.
    rng = np.random.default_rng(0)
    x = torch.from_numpy((rng.random((40, 1, 1)) + rng.random((1, 1, 40))).astype(np.float32)).expand(40, 8, 40)
    x = x[None, None].contiguous()
    thick = thick_slices(x, axis=2, factor=3.0)
    detail = [float(torch.diff(thick, dim=2 + a).abs().mean() / (torch.diff(x, dim=2 + a).abs().mean() + 1e-12))
              for a in (0, 2)]
    assert detail[0] == pytest.approx(1.0, abs=1e-4) and detail[1] < 0.6, detail
    assert float(thick.mean()) == pytest.approx(float(x.mean()), rel=0.02)
    assert torch.equal(thick_slices(x, 0, 1.0), x)


def test_domain_randomisation_is_seeded_keeps_the_background_and_the_scale():
    import torch

    from napari_brainage.training.augment import randomise_domain

    x, _ = _t1_input()
    x = x.repeat(6, 1, 1, 1, 1)
    a = randomise_domain(x, np.random.default_rng(4))
    b = randomise_domain(x, np.random.default_rng(4))
    assert torch.equal(a, b)
    assert bool((a[x == 0] == 0).all())  # nothing drawn in the background
    means = [float(scan[scan > 0].mean()) for scan in a]
    assert means == pytest.approx([1.0] * 6, rel=1e-3)
    # Three independent coin flips per scan: some scans change, most of them.
    changed = [not torch.allclose(a[i], x[i]) for i in range(6)]
    assert sum(changed) >= 3


def test_a_domain_randomised_predictor_says_it_reads_every_contrast(tiny_cohort, tmp_path):
    from napari_brainage.quality import ANY_CONTRAST as CONTRASTS

    cohort = load_cohort(tiny_cohort)
    config = TrainConfig(epochs=1, batch_size=4, val_fraction=0.25, seed=1, randomise_domain=True)
    card = train_predictor(cohort, tmp_path, config, progress=lambda _: None)
    assert card.contrasts == CONTRASTS and read_card(tmp_path).contrasts == CONTRASTS
    assert card.training["predictor"]["randomise_domain"] is True


def test_too_few_validation_subjects_are_said_and_fit_no_bias_line(tiny_cohort, tiny_model, tmp_path):
    """A 9-scan table gave "validation MAE 0.52 y (best)" from one subject and a bias line
    through one point (helper's report, 2026-12-01)."""
    from napari_brainage.training.predictor import MIN_BIAS_FIT_SUBJECTS

    cohort = load_cohort(tiny_cohort, limit=8)
    messages: list[str] = []
    card = train_predictor(cohort, tmp_path / "m", TrainConfig(epochs=1, batch_size=4, val_fraction=0.25, seed=1),
                           progress=messages.append)
    assert card.training["predictor"]["validation"] == 2 < MIN_BIAS_FIT_SUBJECTS
    assert any("warning: 2 validation subject(s) pick the best epoch" in m for m in messages), messages
    assert any("too few to fit the age bias" in m for m in messages)
    assert (card.bias_slope, card.bias_intercept) == (1.0, 0.0)
    assert (read_card(tiny_model).bias_slope, read_card(tiny_model).bias_intercept) == (1.0, 0.0)


def test_a_scan_of_another_contrast_in_a_training_table_is_named(tmp_path):
    """Training reads any contrast (a domain-randomised model should), but a T2 scan slipped
    into a T1 table was learnt from without a word."""
    from napari_brainage.io import Volume, save_volume
    from napari_brainage.samples import sample_path
    from napari_brainage.synthetic.config import CohortConfig
    from napari_brainage.synthetic.model import ageing_model
    from napari_brainage.synthetic.render import CONTRASTS

    scan = ageing_model(CohortConfig()).synthesize(66.0, np.random.default_rng(2), contrast=CONTRASTS["t2"])
    save_volume(Volume(scan.data, scan.affine), tmp_path / "t2.nii.gz")
    (tmp_path / "participants.csv").write_text(
        f"subject,path,age\nt1,{sample_path('synthetic_age50')},50\nsub-t2,t2.nii.gz,66\n")
    messages: list[str] = []
    cohort = load_cohort(tmp_path / "participants.csv", progress=messages.append)
    assert cohort.subjects == ["t1", "sub-t2"]  # kept: the table is the user's choice
    assert any("reads 1 of 2 scans as not T1-weighted: sub-t2 (T2)" in m for m in messages), messages


def test_a_table_with_a_subject_without_age_is_refused_before_any_scan_is_loaded(tiny_cohort, tmp_path,
                                                                                 cli_in_process):
    """``preprocess`` keeps subjects without an age in its table; training on it said
    "could not convert string to float: ''" after preparing every scan."""
    rows = tiny_cohort.read_text().splitlines()
    header = rows[0].split(",")
    cells = rows[1].split(",")
    cells[header.index("age")] = ""
    cells[header.index("path")] = str(tiny_cohort.parent / cells[header.index("path")])
    table = tmp_path / "participants.csv"
    table.write_text("\n".join([rows[0], ",".join(cells)]) + "\n")
    result = cli_in_process("train", "predictor", "--data", table, "--out", tmp_path / "model", "--epochs", "1")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"napari-brainage train: error: {table}: training needs every subject's age; none (or not a number) for "
        f"'{cells[header.index('subject')]}': give their ages or leave them out of the table"]
    assert "prepared" not in result.stdout and not (tmp_path / "model").exists()
