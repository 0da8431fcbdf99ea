"""Fast stand-ins for the core in widget tests whose point is the widget's state
(ready, busy, what it shows), not the numbers (those tests use the tiny model)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from napari_brainage._napari.widgets import brain_age
from napari_brainage.inference import AgeResult
from napari_brainage.io import Volume
from napari_brainage.model.card import ModelCard

#: What SimpleITK raises when registration finds no overlap (a statistical map, a
#: label image): a RuntimeError of several lines.
ITK_ERROR = ("Exception thrown in SimpleITK ImageRegistrationMethod_Execute: "
             "/tmp/SimpleITK/Code/Registration/src/sitkImageRegistrationMethod.cxx:1012:\n"
             "ITK ERROR: ImageRegistrationMethodv4(0x55d0c0a8b2f0): All samples map outside moving image buffer")


def ended(worker) -> list:
    """A list that gets an item when ``worker`` has finished (whatever the widget does)."""
    done: list = []
    worker.finished.connect(lambda: done.append(True))
    return done


class FakeCore:
    """Stand-ins for the core calls the Brain age worker makes: the predicted age is
    ``predicted``, the map the scan's own intensities scaled to [0, 1];
    ``prepare`` (volume, mode) can be replaced to block or fail."""

    def __init__(self, monkeypatch, predicted: float = 59.9, qc: str = "ok"):
        self.predicted, self.qc = predicted, qc
        self.prepare = lambda volume, mode: object()
        # What the worker reads of a model: its card, and whether it has a noise model.
        model = SimpleNamespace(card=ModelCard(), noise_model=object())
        monkeypatch.setattr(brain_age, "load_model", lambda *a, **k: (model, "cpu"))
        monkeypatch.setattr(brain_age, "prepare_input", lambda volume, mode, reads: self.prepare(volume, mode))
        monkeypatch.setattr(brain_age, "predict_age", self.predict_age)
        monkeypatch.setattr(brain_age, "importance_map", self.importance_map)

    def predict_age(self, volume, model, device, age=None, prepared=None, interval_level=0.9):
        result = AgeResult(subject="scan", path="", predicted_age=self.predicted, age=age, qc=self.qc)
        result.qc_status = "pass" if self.qc == "ok" else "warn"  # as the core sets it
        # A calibrated model's interval: wider at a higher level, as conformal quantiles are.
        half = 4.0 + 10.0 * (interval_level - 0.8)
        result.interval_low, result.interval_high = self.predicted - half, self.predicted + half
        result.interval_level = interval_level
        if age is not None:
            result.gap = result.corrected_gap = self.predicted - age
            result.gap_centile = 97.0
        return result

    @staticmethod
    def importance_map(volume, model, device, prepared=None, method="noise"):
        data = np.asarray(volume.data, dtype=np.float32)
        return Volume(data=data / max(float(data.max()), 1e-6), affine=volume.affine)
