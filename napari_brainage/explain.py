"""Importance maps behind one interface: the noise model and Captum baselines.

Every method takes the model input (1, 1, X, Y, Z) and returns a map of the same
grid in [0, 1], 0 outside the scan, so maps of different methods can be shown,
averaged and scored alike:

* ``noise``: 1 - B, the U-Noise mask (the plugin's method; no gradients),
  averaged over the scan and its mirror image (``noise_importance``).
* ``saliency``: |d age / d x| (Simonyan et al. 2014).
* ``integrated_gradients``: |IG| from a black (all-zero) baseline, 50 steps
  (Sundararajan et al. 2017).
* ``smoothgrad``: mean |gradient| over 20 noisy copies, noise sd 0.1 (intensities
  have mean 1; Smilkov et al. 2017), via Captum's NoiseTunnel.
* ``occlusion``: |change in predicted age| when a cube of 16 voxels (32 mm) a
  side is set to 0, tiling the input without overlap (Zeiler & Fergus 2014):
  150 forward passes; finer windows cost proportionally more.
* ``gradcam``: Grad-CAM on the predictor's last convolutional block, upsampled
  trilinearly (Selvaraju et al. 2017). That block is 2 x 3 x 2 voxels, so the
  map is very coarse, as in other brain-age studies.

Gradient maps are made non-negative (absolute values: both directions change
the predicted age) and scaled by their 99.5th percentile in the brain, then
clipped to [0, 1]: comparable across subjects for population averages, and
rank-based scores (AUROC) are unaffected.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .errors import InputError
from .model.networks import LEFT_RIGHT, mirror
from .options import Method

#: The methods' names and labels (``options.Method`` is where they are defined).
METHODS = Method.values()
LABELS = {m.value: m.label for m in Method}


@dataclass(frozen=True)
class MethodSettings:
    """Settings of the Captum baselines (steps, samples, noise sd, patch sizes) and mirror averaging."""

    ig_steps: int = 50
    smoothgrad_samples: int = 20
    smoothgrad_sd: float = 0.1
    occlusion_window: int = 16
    occlusion_stride: int = 16
    occlusion_batch: int = 16
    #: Average each map with the mirrored map of the mirrored scan. None: the
    #: method's default, on for the noise model only (the baselines as published).
    mirror_average: bool | None = None


def noise_importance(x: torch.Tensor, noise_model: torch.nn.Module, mirror_average: bool = True) -> np.ndarray:
    """1 - B for a batch ``x`` (N, 1, X, Y, Z) -> (N, X, Y, Z), 0 outside the scan.

    Why the mirror average: the predictor was trained on left-right flipped scans
    too, so it ages a scan and its mirror image alike, but its sensitivity is
    not left-right symmetric (its gradient maps are not either), and the noise
    model, fitted to it on unflipped scans, inherits that bias. Averaging the
    mask of the scan with the mirrored mask of the mirrored scan explains the
    predictor on both orientations it was trained to treat alike; the map keeps
    the subject's own asymmetries (each half comes from the scan as it is).
    Measured gains and costs: README, "Importance methods compared".
    """
    with torch.no_grad():
        if mirror_average:
            both = noise_model(torch.cat([x, mirror(x)]))
            mask = (both[: len(x)] + mirror(both[len(x):])) / 2
        else:
            mask = noise_model(x)
    values = 1.0 - mask[:, 0].cpu().numpy()
    return np.where(x[:, 0].cpu().numpy() > 0, values, 0.0).astype(np.float32)


def attribution(x: torch.Tensor, model, method: str = "noise", settings: MethodSettings | None = None
                ) -> np.ndarray:
    """The ``method``'s map for the model input ``x`` (1, 1, X, Y, Z), in [0, 1]."""
    method = Method.parse(method).value
    settings = settings or MethodSettings()
    averaged = settings.mirror_average if settings.mirror_average is not None else method == "noise"
    if method == "noise":
        if model.noise_model is None:
            raise InputError(f"{model.folder}: this model folder has no noise model")
        return noise_importance(x, model.noise_model, averaged)[0]
    inside = (x[0, 0] > 0).cpu().numpy()
    raw = np.abs(_captum(x, model.predictor, method, settings))
    if averaged:
        mirrored = np.abs(_captum(mirror(x), model.predictor, method, settings))
        raw = (raw + np.flip(mirrored, axis=LEFT_RIGHT - 2)) / 2  # the map has no batch and channel axes
    return _scaled(raw, inside)


def _captum(x: torch.Tensor, predictor: torch.nn.Module, method: str, settings: MethodSettings) -> np.ndarray:
    from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, NoiseTunnel, Occlusion, Saliency

    predictor.eval()
    x = x.detach().clone().requires_grad_(method != "occlusion")
    if method == "saliency":
        result = Saliency(predictor).attribute(x, abs=True)
    elif method == "integrated_gradients":
        result = IntegratedGradients(predictor).attribute(x, baselines=torch.zeros_like(x), n_steps=settings.ig_steps,
                                                          internal_batch_size=10)
    elif method == "smoothgrad":
        result = NoiseTunnel(Saliency(predictor)).attribute(
            x, nt_type="smoothgrad", nt_samples=settings.smoothgrad_samples, nt_samples_batch_size=5,
            stdevs=settings.smoothgrad_sd, abs=True)
    elif method == "occlusion":
        window, stride = settings.occlusion_window, settings.occlusion_stride
        with torch.no_grad():
            result = Occlusion(predictor).attribute(x, sliding_window_shapes=(1, window, window, window),
                                                    strides=(1, stride, stride, stride), baselines=0.0,
                                                    perturbations_per_eval=settings.occlusion_batch)
    else:  # gradcam
        layer = predictor.classifier  # the last convolutional block
        cam = LayerGradCam(predictor, layer).attribute(x, relu_attributions=False)
        result = LayerAttribution.interpolate(cam, tuple(x.shape[2:]), interpolate_mode="trilinear")
    return result.detach()[0, 0].cpu().numpy()


def _scaled(values: np.ndarray, inside: np.ndarray) -> np.ndarray:
    values = np.where(inside, values, 0.0)
    top = np.percentile(values[inside], 99.5) if inside.any() else 0.0
    if top <= 0:
        return np.zeros(values.shape, np.float32)
    return np.clip(values / top, 0.0, 1.0).astype(np.float32)
