"""Errors in words: the user's errors apart from bugs, and one scan's failure as
the one line stored in a results row's ``error`` column.

* :class:`BrainAgeError`: a problem the user can fix (a bad file, a bad option,
  an input the model cannot read). The CLI prints its message on one line and
  exits with status 2; any other exception is a bug and keeps its traceback.
  :class:`InputError` is the same for bad values, and is also a ``ValueError``.

Runs over many scans catch any ``Exception`` of one scan (never ``BaseException``:
Ctrl-C still stops the run), keep :func:`describe_error`'s one line in that
scan's row or log, and go on with the next scan.
"""

from __future__ import annotations

import re


class BrainAgeError(Exception):
    """A problem the user can fix, said in words (no traceback needed)."""


class InputError(BrainAgeError, ValueError):
    """A bad input value, file content or option (also a ``ValueError``)."""


class OptionError(InputError):
    """A bad value of the option (configuration field) ``option``; the CLI names the
    flag that sets it ("--epochs must be at least 1, got 0")."""

    def __init__(self, option: str, problem: str):
        self.option, self.problem = option, problem
        super().__init__(f"{option} {problem}")

#: Longest message kept (a CSV cell and a terminal line stay readable).
MAX_LENGTH = 300

# Where in our code a failure happened -> what failed, for the message's start.
_STAGES = (
    (("napari_brainage.space.registration",), (), "registration"),
    (("napari_brainage.io",), (), "reading the scan"),
    (("napari_brainage.inference",), ("prepare_input",), "preprocessing"),
    (("napari_brainage.preprocess", "napari_brainage.space.grid"), (), "preprocessing"),
    (("napari_brainage.explain",), (), "the importance map"),
    (("napari_brainage.model", "napari_brainage.inference"), (), "the model"),
)

# "ITK ERROR: MattesMutualInformationImageToImageMetricv4(0x55d0c0a8b2f0): " and the like.
_ITK_PREFIX = re.compile(r"^.*?\bERROR:\s*(?:[\w:<>, ]+\(0x[0-9a-fA-F]+\):\s*)?")
# A source location: "/tmp/SimpleITK/Code/.../sitkImageRegistrationMethod.cxx:1012:" or "file.py:12".
_SOURCE_LOCATION = re.compile(r"\s*(?:[A-Za-z]:)?[\\/][^\s:]+(?::\d+)+:?")


def describe_error(err: BaseException, limit: int = MAX_LENGTH) -> str:
    """``err`` as one line of at most ``limit`` characters, without a traceback.

    ``ValueError`` and ``OSError`` (our own checks, already in words, and file
    system errors) give their message; anything else says what failed and the
    exception's type and meaningful line, e.g. ``registration failed
    (RuntimeError: Exception thrown in SimpleITK ImageRegistrationMethod_Execute:
    All samples map outside moving image buffer. ...)``.
    """
    if isinstance(err, (ValueError, OSError)):
        return _shorten(_one_line(str(err)) or type(err).__name__, limit)
    text = meaningful_part(str(err))
    detail = f"{type(err).__name__}: {text}" if text else type(err).__name__
    prefix = f"{_stage(err)} failed ("
    return prefix + _shorten(detail, limit - len(prefix) - 1) + ")"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def meaningful_part(text: str) -> str:
    """The informative part of a (possibly long, multi-line) message.

    The first line, without source paths. ITK's messages are several lines:
    "Exception thrown in SimpleITK X: <path>:<line>:" then "ITK ERROR:
    Class(0x...): <what went wrong>"; for those, the first line's words and the
    last line's reason.
    """
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    head = _SOURCE_LOCATION.sub("", lines[0]).strip().rstrip(":").strip()
    if len(lines) == 1 or "ERROR:" not in lines[-1]:
        return head
    reason = _SOURCE_LOCATION.sub("", _ITK_PREFIX.sub("", lines[-1])).strip()
    return f"{head}: {reason}" if head and reason and reason not in head else head or reason


def _shorten(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, at the end of a sentence when one ends late enough."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 3]
    end = cut.rfind(". ")
    if end >= limit // 2:
        return cut[: end + 1]
    return cut.rstrip() + "..."


def _stage(err: BaseException) -> str:
    """What was being done when ``err`` was raised: the innermost frame of ours that says."""
    frames = []
    tb = err.__traceback__
    while tb is not None:
        frames.append((tb.tb_frame.f_globals.get("__name__", ""), tb.tb_frame.f_code.co_name))
        tb = tb.tb_next
    for module, function in reversed(frames):
        for modules, functions, stage in _STAGES:
            if any(module == m or module.startswith(m + ".") for m in modules) and (
                    not functions or function in functions):
                return stage
    return "processing"
