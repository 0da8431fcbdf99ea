"""One scan's failure in words: ``errors.describe_error``."""

from __future__ import annotations

import numpy as np
import pytest

from napari_brainage.errors import MAX_LENGTH, describe_error
from napari_brainage.io import VolumeError


def _raised(function, *args) -> Exception:
    try:
        function(*args)
    except Exception as err:  # noqa: BLE001 - the point is to describe anything
        return err
    raise AssertionError("nothing was raised")


def _itk_registration_error() -> RuntimeError:
    """SimpleITK's own exception: two images that do not overlap at all."""
    import SimpleITK as sitk

    fixed = sitk.GetImageFromArray(np.random.default_rng(0).random((16, 16, 16)).astype(np.float32))
    moving = sitk.GetImageFromArray(np.random.default_rng(1).random((16, 16, 16)).astype(np.float32))
    moving.SetOrigin((500.0, 500.0, 500.0))
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(32)
    method.SetOptimizerAsRegularStepGradientDescent(1.0, 1e-3, 5)
    method.SetInitialTransform(sitk.TranslationTransform(3))
    method.SetInterpolator(sitk.sitkLinear)
    err = _raised(method.Execute, fixed, moving)
    assert isinstance(err, RuntimeError) and "\n" in str(err)  # several lines, with a source path
    return err


def test_itk_errors_become_one_readable_line():
    message = describe_error(_itk_registration_error())
    assert message.startswith("processing failed (RuntimeError: Exception thrown in SimpleITK "
                              "ImageRegistrationMethod_Execute: ")
    assert "All samples map outside moving image buffer" in message
    assert "\n" not in message and len(message) <= MAX_LENGTH and message.endswith(")")
    assert ".hxx" not in message and ".cxx" not in message and "(0x" not in message


def test_what_failed_comes_from_where_it_was_raised(tmp_path, monkeypatch):
    """Raised inside registration: "registration failed"; inside reading: "reading the scan failed"."""
    from conftest import phantom, write_nifti

    import napari_brainage.io as io
    import napari_brainage.space.registration as registration

    def working_image(volume):
        raise RuntimeError("ITK said no")

    monkeypatch.setattr(registration, "_working_image", working_image)
    err = _raised(registration.register, None)
    assert describe_error(err) == "registration failed (RuntimeError: ITK said no)"

    scan = write_nifti(tmp_path / "scan.nii", phantom(), np.eye(4))

    def load(path):
        raise MemoryError("cannot allocate 1.00 GiB")

    monkeypatch.setattr(io.nib, "load", load)
    err = _raised(io.load_volume, scan)
    assert describe_error(err) == "reading the scan failed (MemoryError: cannot allocate 1.00 GiB)"


@pytest.mark.parametrize("err, expected", [
    (VolumeError("scan.nii: the image is 4D with 3 volumes"), "scan.nii: the image is 4D with 3 volumes"),
    (FileNotFoundError(2, "No such file or directory", "x.nii"), "[Errno 2] No such file or directory: 'x.nii'"),
    (ValueError("first line\n  second line"), "first line second line"),
    (MemoryError(), "processing failed (MemoryError)"),
    (KeyError("age"), "processing failed (KeyError: 'age')"),
    (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore"),
     "processing failed (RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB)"),
])
def test_own_messages_kept_others_named_by_type(err, expected):
    assert describe_error(err) == expected


def test_long_messages_are_cut_at_a_sentence_or_marked():
    sentences = " ".join(f"Sentence number {i} says something." for i in range(40))
    cut = describe_error(RuntimeError(sentences))
    assert len(cut) <= MAX_LENGTH and cut.endswith("something.)")
    word = describe_error(ValueError("x" * 1000))
    assert len(word) == MAX_LENGTH and word.endswith("...")
