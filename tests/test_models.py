"""Networks, model cards and safe weight loading."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from napari_brainage.model.bundle import BrainAgeModel, bundled_model_dir, pick_device
from napari_brainage.model.card import (
    CARD_FILE,
    NOISE_MODEL_FILE,
    PREDICTOR_FILE,
    ModelCard,
    ModelError,
    normalise,
    read_card,
)
from napari_brainage.model.networks import NoiseUNet, SFCNRegressor


def test_networks_shapes_and_mask_range():
    x = torch.randn(2, 1, 80, 96, 80)
    predictor, noise = SFCNRegressor().eval(), NoiseUNet().eval()
    with torch.no_grad():
        assert predictor(x).shape == (2,)
        mask = noise(x)
    assert mask.shape == x.shape
    assert float(mask.min()) > 0 and float(mask.max()) < 1
    # Small enough to ship: well under a few MB of float32 weights.
    n_params = sum(p.numel() for m in (predictor, noise) for p in m.parameters())
    assert n_params * 4 < 3_000_000


def test_normalise_divides_by_mean_of_nonzero_voxels():
    scans = np.zeros((2, 4, 4, 4), np.float32)
    scans[0, :2] = 10.0
    scans[1, :1] = 4.0
    out = normalise(scans)
    assert out[0, 0, 0, 0] == pytest.approx(1.0) and out[1, 0, 0, 0] == pytest.approx(1.0)
    assert out[0, 3, 3, 3] == 0.0


def test_card_round_trips_through_json(tmp_path):
    card = ModelCard(age_mean=60.0, bias_slope=0.8, weights={"predictor.pt": "ab" * 32})
    (tmp_path / CARD_FILE).write_text(card.to_json())
    again = read_card(tmp_path)
    assert again == card


def test_a_card_without_the_newer_noise_fields_reads_the_settings_it_was_trained_with(tmp_path):
    # Lambda 0.5 with noise only in the brain is today's default; a card written
    # before brain_only existed was trained over the whole scan, and must say so.
    card = ModelCard()
    assert (card.noise.lam, card.noise.brain_only) == (0.5, True)
    data = json.loads(card.to_json())
    del data["noise"]["brain_only"], data["noise"]["lam"]
    (tmp_path / CARD_FILE).write_text(json.dumps(data))
    old = read_card(tmp_path).noise
    assert (old.lam, old.brain_only) == (0.05, False)
    data["noise"].update(lam=0.2, brain_only=True)
    (tmp_path / CARD_FILE).write_text(json.dumps(data))
    assert (read_card(tmp_path).noise.lam, read_card(tmp_path).noise.brain_only) == (0.2, True)


def test_a_card_with_an_unknown_pooling_is_refused_by_name(tmp_path):
    card = ModelCard(predictor_pool="avg")
    (tmp_path / CARD_FILE).write_text(card.to_json())
    assert read_card(tmp_path).predictor_pool == "avg"
    (tmp_path / CARD_FILE).write_text(card.to_json().replace('"avg"', '"median"'))
    with pytest.raises(ModelError, match="predictor_pool 'median' is not one of max, avg"):
        read_card(tmp_path)


def test_model_folder_loads_after_checksum(tiny_model):
    model = BrainAgeModel.load(tiny_model, need_noise_model=True)
    assert isinstance(model.noise_model, NoiseUNet)
    assert not any(p.requires_grad for p in model.predictor.parameters())
    assert not model.predictor.training


def test_tampered_weights_are_refused(tiny_model, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    state = torch.load(folder / PREDICTOR_FILE, weights_only=True)
    first = next(iter(state))
    state[first] = state[first] + 1e-3  # a subtle change: same shapes, still loadable
    torch.save(state, folder / PREDICTOR_FILE)
    with pytest.raises(ModelError, match="checksum mismatch"):
        BrainAgeModel.load(folder)


class _Payload:
    """Stands for an object a malicious pickle would smuggle in."""


def test_pickled_objects_are_never_unpickled_even_with_a_matching_checksum(tiny_model, tmp_path):
    from napari_brainage.model.weights import sha256

    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    torch.save({"weights": _Payload()}, folder / PREDICTOR_FILE)
    card = json.loads((folder / CARD_FILE).read_text())
    card["weights"][PREDICTOR_FILE] = sha256(folder / PREDICTOR_FILE)  # attacker also edits the card
    (folder / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(ModelError, match="not loadable"):
        BrainAgeModel.load(folder)


def test_missing_or_broken_model_folders(tmp_path, tiny_model):
    with pytest.raises(ModelError, match="not a napari-brainage model folder"):
        BrainAgeModel.load(tmp_path)
    (tmp_path / CARD_FILE).write_text("{not json")
    with pytest.raises(ModelError, match="unreadable model card"):
        BrainAgeModel.load(tmp_path)
    partial = tmp_path / "partial"
    shutil.copytree(tiny_model, partial)
    (partial / NOISE_MODEL_FILE).unlink()
    with pytest.raises(ModelError, match="weight file missing"):
        BrainAgeModel.load(partial)


def test_device_choice():
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("auto").type in ("cpu", "cuda")
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="no CUDA device"):
            pick_device("gpu")
    with pytest.raises(ModelError, match="unknown device"):
        pick_device("tpu")


@pytest.mark.skipif(not (bundled_model_dir() / CARD_FILE).exists(), reason="no bundled model yet")
def test_bundled_model_checksums_verify_and_it_is_small():
    model = BrainAgeModel.load(bundled_model_dir(), need_noise_model=True)
    sizes = sum((bundled_model_dir() / name).stat().st_size for name in model.card.weights)
    assert sizes < 4_000_000
    assert set(model.card.weights) == {PREDICTOR_FILE, NOISE_MODEL_FILE}
    assert model.card.metrics, "the bundled card must report its held-out metrics"


def test_full_resolution_head_corrects_the_coarse_mask_and_old_cards_still_load(tiny_model, tmp_path):
    # The head adds a correction to the coarse logits: with its last layer at
    # zero the model is exactly the coarse one, so training starts from it.
    torch.manual_seed(0)
    coarse, sharp = NoiseUNet().eval(), NoiseUNet(full_resolution_head=True).eval()
    missing = sharp.load_state_dict(coarse.state_dict(), strict=False).missing_keys
    assert missing and all(key.startswith("head.") for key in missing)
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(sharp(x), coarse(x))
        sharp.head[-1].weight.zero_()
        sharp.head[-1].bias.zero_()
        assert torch.allclose(sharp(x), coarse(x))
    # A card written before the head existed has no such key: it loads as coarse.
    shutil.copytree(tiny_model, tmp_path / "old")
    card = json.loads((tmp_path / "old" / CARD_FILE).read_text())
    assert card.pop("noise_full_resolution_head") is False
    (tmp_path / "old" / CARD_FILE).write_text(json.dumps(card))
    assert BrainAgeModel.load(tmp_path / "old", need_noise_model=True).noise_model.head is None


def test_a_noise_model_trained_with_the_head_loads_with_it(tiny_cohort, tiny_model, tmp_path):
    from napari_brainage.training.config import TrainConfig
    from napari_brainage.training.data import load_cohort
    from napari_brainage.training.noise_model import train_noise_model

    config = TrainConfig(epochs=1, batch_size=2, val_fraction=0.25, seed=1)
    train_noise_model(load_cohort(tiny_cohort), tiny_model, tmp_path, config, progress=lambda _: None,
                      full_resolution_head=True)
    model = BrainAgeModel.load(tmp_path, need_noise_model=True)
    assert model.card.noise_full_resolution_head is True and model.noise_model.head is not None
    # The card says "head": the coarse weights of another folder do not fit it.
    shutil.copy2(tiny_model / NOISE_MODEL_FILE, tmp_path / NOISE_MODEL_FILE)
    card = json.loads((tmp_path / CARD_FILE).read_text())
    card["weights"][NOISE_MODEL_FILE] = read_card(tiny_model).weights[NOISE_MODEL_FILE]
    (tmp_path / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(ModelError, match="not loadable"):
        BrainAgeModel.load(tmp_path, need_noise_model=True)
