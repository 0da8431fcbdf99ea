"""One page per scan for people to file or share: the age with its interval, where
the gap stands against held-out subjects, the QC verdict with a registration
check, the importance map through its peak, and which model said so.

Drawn with matplotlib's object API (``Figure``; no pyplot state, so worker
threads may draw) into PDF, and PNG when asked. Every sentence comes from
``report`` and ``uncertainty``, so the page says what the widget and the CSV say.

Page layout (A4 portrait), top to bottom:

1. title: scan, date, file;
2. the numbers (predicted age, interval, age, gaps, centile, QC verdict,
   contrast, preprocessing) beside the normative chart (chronological age on x,
   predicted age on y: the calibration subjects, the band holding ``level`` of
   them around the bias line, this scan's point and interval);
3. the importance map over the scan, three orthogonal slices through the map's
   peak on the scan's own voxels (neurological convention: the patient's right on
   the page's right, labelled), with a colour bar;
4. the registration check: the scan on the template grid with the template's
   brain outline, beside the regions ranked by their share of the map's top
   10 %, against the model's population map;
5. the model (folder, weight checksums), what it was trained on, and a plain
   statement of what the bundled model is not.
"""

from __future__ import annotations

import csv
import datetime as _dt
import textwrap
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from . import __version__
from .io import Volume, atomic_path
from .population import RegionScore
from .report import centile_of, interval_caveat, interval_of, qc_verdict
from .threshold import map_contrast_limits

#: A4 portrait, inches.
PAGE_SIZE = (8.27, 11.69)
#: Regions listed on the page.
TOP_REGIONS = 6
#: A scan's page is ``<subject>_report.pdf`` (``.png`` beside it when asked): ``page_path``.
PAGE_SUFFIX = "_report"
#: What the bundled model is, in one sentence, on every page made with it.
BUNDLED_STATEMENT = ("The bundled model was trained on synthetic scans made from one average brain (MNI152 "
                     "template) with simulated ageing; it has never seen a real patient. Research use only: "
                     "not a medical device, not for clinical decisions.")


@dataclass
class ScanReport:
    """What one page shows (``build_report``): the result and, when QC passed, the
    pictures' data. Arrays are float32; ``None`` where the scan failed QC."""

    result: object                         #: ``inference.AgeResult``
    scan: Volume | None = None             #: the scan as given
    template_scan: np.ndarray | None = None  #: the scan on the 2 mm template grid (registration check)
    importance: Volume | None = None       #: importance on the scan's grid
    regions: list[RegionScore] = field(default_factory=list)
    population_regions: dict[str, float] = field(default_factory=dict)  #: region -> top share


def build_report(scan: Volume, age: float | None, model, device, preprocessing: str = "auto",
                 method: str = "noise", interval_level: float = 0.9, subject: str | None = None) -> ScanReport:
    """Everything a page needs for ``scan``, through the same calls as ``predict`` and
    ``explain`` (one preparation, reused). A scan failing QC gives a report with
    the reason and no age or map; other errors raise."""
    from .inference import AgeResult, importance_map, predict_age, prepare_input
    from .population import rank_regions_of
    from .quality import QualityError

    name = subject or (scan.path.name if scan.path is not None else "scan")
    try:
        prepared = prepare_input(scan, preprocessing, model.card.contrasts)
    except QualityError as err:
        return ScanReport(result=AgeResult.failed(name, scan.path or "", age, err), scan=scan)
    result = predict_age(scan, model, device, age, prepared=prepared, interval_level=interval_level)
    result.subject = name
    importance = importance_map(scan, model, device, prepared=prepared, method=method)
    return ScanReport(result=result, scan=scan, template_scan=prepared.data, importance=importance,
                      regions=rank_regions_of(importance), population_regions=population_shares(model.folder))


def page_path(folder: str | Path, subject: str, kind: str = "pdf") -> Path:
    """Where a scan's page goes: ``folder/<subject>_report.<kind>`` (the CLI, the cohort
    run and the widget's Report button all write and look for it here)."""
    return Path(folder) / f"{subject}{PAGE_SUFFIX}.{kind}"


def model_label(model_dir: str | Path | None) -> str:
    """How a page names its model: the folder, or "bundled model"."""
    return str(model_dir) if model_dir else "bundled model"


def population_shares(model_folder: Path) -> dict[str, float]:
    """Region -> share of the model's population map's top 10 % (its
    ``population_regions.csv``), or {} when the folder has none. Read once per
    version of the file: a cohort's pages all ask for the same table."""
    path = Path(model_folder) / "population_regions.csv"
    if not path.is_file():
        return {}
    return dict(_read_shares(str(path.resolve()), path.stat().st_mtime_ns))


@lru_cache(maxsize=8)
def _read_shares(path: str, mtime_ns: int) -> tuple[tuple[str, float], ...]:
    """The table's (region, share) pairs; ``mtime_ns`` is in the key so an edited file is re-read."""
    with open(path, newline="") as handle:
        return tuple((row["region"], float(row["share_in_top10"])) for row in csv.DictReader(handle))


# ------------------------------------------------------------------ drawing
def draw_page(report: ScanReport, card, model_name: str, level: float = 0.9):
    """The page as a matplotlib ``Figure`` (A4 portrait)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=PAGE_SIZE)
    result = report.result
    figure.text(0.05, 0.965, f"Brain age report: {_shorten(result.subject, 48)}", fontsize=16, weight="bold")
    figure.text(0.05, 0.945, f"{_dt.date.today().isoformat()}   napari-brainage {__version__}   "
                             f"file: {_shorten(str(result.path), 80) or 'not known (a layer made in napari)'}",
                fontsize=8, color="0.3")
    _numbers(figure.add_axes((0.05, 0.70, 0.42, 0.23)), result)
    _normative_chart(figure.add_axes((0.58, 0.725, 0.37, 0.2)), result, card, level)
    if report.importance is not None:
        _map_slices(figure, report.scan, report.importance, top=0.66)
        _registration_check(figure, report.template_scan, bottom=0.155)
        _regions(figure.add_axes((0.52, 0.155, 0.43, 0.19)), report.regions, report.population_regions)
    else:
        note = figure.add_axes((0.05, 0.3, 0.9, 0.35))
        note.axis("off")
        reason = textwrap.wrap(qc_verdict(result), 100)
        note.text(0, 0.9, "\n".join(["No age and no map are made from a scan that fails quality control:", "",
                                     *reason]), va="top", fontsize=9.5)
    _footer(figure.add_axes((0.05, 0.01, 0.9, 0.1)), card, model_name)
    return figure


def _numbers(ax, result) -> None:
    ax.axis("off")
    rows = []
    if result.predicted_age is not None:
        rows.append(("predicted brain age", f"{result.predicted_age:.1f} y"))
        interval = interval_of(result)
        if interval:
            rows += [("", line) for line in textwrap.wrap(interval + interval_caveat(result), 34)]
    if result.age is not None:
        rows.append(("chronological age", f"{result.age:.1f} y"))
        if result.gap is not None:
            rows += [("brain-age gap", f"{result.gap:+.1f} y"),
                     ("corrected gap", f"{result.corrected_gap:+.1f} y{centile_of(result)}")]
    else:
        rows.append(("chronological age", "not given (no gap)"))
    rows.append(("contrast", result.contrast or "not told"))
    route = textwrap.wrap(result.preprocessing, 34) or [""]
    rows += [("preprocessing", route[0]), *[("", line) for line in route[1:3]]]
    y = 1.0
    for label, value in rows:
        ax.text(0, y, label, fontsize=9, color="0.35", va="top", transform=ax.transAxes)
        ax.text(0.42, y, value, fontsize=11 if label == "predicted brain age" else 9, va="top",
                weight="bold" if label == "predicted brain age" else "normal", transform=ax.transAxes)
        y -= 0.09
    colour = {"pass": "darkgreen", "warn": "darkorange", "fail": "firebrick"}.get(result.qc_status, "black")
    verdict = textwrap.wrap(qc_verdict(result), 60)
    shown = verdict if result.predicted_age is not None or len(verdict) <= 4 else verdict[:3] + ["(in full below)"]
    ax.text(0, y - 0.02, "\n".join(shown), fontsize=8.5, color=colour, va="top", transform=ax.transAxes)


def _normative_chart(ax, result, card, level: float) -> None:
    """Chronological vs predicted age: calibration subjects, the band of ``level`` of
    them around the bias line (the corrected gaps' central quantiles), this scan."""
    calibration = card.calibration
    ax.set_xlabel("chronological age (y)", fontsize=8)
    ax.set_ylabel("predicted brain age (y)", fontsize=8)
    ax.tick_params(labelsize=7)
    ages = np.linspace(card.age_mean - 2 * card.age_sd, card.age_mean + 2 * card.age_sd, 50)
    if calibration is not None:
        ax.scatter(calibration.ages, calibration.predicted, s=3, color="0.7", label="held-out subjects")
        gaps = calibration.corrected_gaps(card.bias_slope, card.bias_intercept)
        low, high = np.quantile(gaps, [(1 - level) / 2, (1 + level) / 2])
        line = card.bias_slope * ages + card.bias_intercept
        ax.fill_between(ages, line + low, line + high, color="tab:blue", alpha=0.15,
                        label=f"{level * 100:g} % of them")
        ax.plot(ages, line, color="tab:blue", lw=1)
        ax.set_title(f"against {calibration.n} held-out subjects", fontsize=8)
    else:
        ax.set_title("model not calibrated: no interval, no centile", fontsize=8)
    ax.plot(ages, ages, color="0.5", lw=0.8, ls=":", label="brain age = age")
    if result.predicted_age is not None:
        if result.interval_low is not None:
            # The interval is one of chronological ages (of people whose scans read like
            # this one): drawn along the age axis, at this scan's predicted age.
            ax.plot([result.interval_low, result.interval_high], [result.predicted_age] * 2, color="crimson",
                    lw=2, alpha=0.5, label="its interval (ages)")
        if result.age is not None:
            ax.plot([result.age], [result.predicted_age], "o", color="crimson", ms=6, label="this scan")
        else:
            ax.axhline(result.predicted_age, color="crimson", lw=0.8, ls="--", label="this scan (age not given)")
    ax.legend(fontsize=6.5, loc="best", frameon=False)  # clear of this scan's point, wherever its age puts it


def _canonical(volume: Volume) -> tuple[np.ndarray, np.ndarray]:
    """(data, voxel sizes) reoriented to RAS+ (nibabel), for upright slices."""
    import nibabel as nib

    image = nib.as_closest_canonical(nib.Nifti1Image(np.asarray(volume.data, np.float32), volume.affine))
    return np.asarray(image.dataobj, np.float32), np.asarray(image.header.get_zooms()[:3], float)


#: The three planes: (name, the RAS axis cut, (label on the right, on the left), (top, bottom)).
VIEWS = (("axial", 2, ("R", "L"), ("A", "P")), ("coronal", 1, ("R", "L"), ("S", "I")),
         ("sagittal", 0, ("A", "P"), ("S", "I")))


def upright_slice(data_ras: np.ndarray, axis: int, index: int) -> np.ndarray:
    """The plane ``index`` across RAS axis ``axis`` of an RAS+ array, as an image
    drawn with ``origin="lower"``: rows run up (anterior or superior last), columns
    to the patient's right (axial, coronal) or front (sagittal): neurological."""
    cut = [slice(None)] * 3
    cut[axis] = index
    return data_ras[tuple(cut)].T


def _peak(importance: np.ndarray) -> tuple[int, int, int]:
    """The voxel at the centre of the map's most important neighbourhood (smoothed
    over about 3 voxels, so one bright voxel does not choose the slices)."""
    from scipy import ndimage

    smoothed = ndimage.gaussian_filter(importance, 1.5)
    return tuple(int(i) for i in np.unravel_index(np.argmax(smoothed), smoothed.shape))


def _map_slices(figure, scan: Volume, importance: Volume, top: float) -> None:
    from matplotlib import colormaps

    anatomy, zooms = _canonical(scan)
    weights, _ = _canonical(importance)
    peak = _peak(weights)
    low, high = map_contrast_limits(weights)
    grey_max = float(np.percentile(anatomy[anatomy > 0], 99.5)) if (anatomy > 0).any() else 1.0
    cmap = colormaps["inferno"]
    width = 0.28
    figure.text(0.05, top + 0.005, f"Importance (1 - noise mask) through its peak, voxel {peak}; the patient's "
                                   "right on the right (neurological)", fontsize=8.5)
    image = None
    for n, (name, axis, (right, left), (up, down)) in enumerate(VIEWS):
        ax = figure.add_axes((0.05 + n * (width + 0.02), top - 0.225, width, 0.21))
        picture, overlay = upright_slice(anatomy, axis, peak[axis]), upright_slice(weights, axis, peak[axis])
        shown = [d for d in range(3) if d != axis]
        extent = (0, picture.shape[1] * zooms[shown[0]], 0, picture.shape[0] * zooms[shown[1]])
        ax.imshow(picture, cmap="gray", origin="lower", vmin=0, vmax=grey_max, extent=extent)
        masked = np.ma.masked_where(overlay < low, overlay)
        image = ax.imshow(masked, cmap=cmap, origin="lower", vmin=low, vmax=high, alpha=0.85, extent=extent)
        ax.set_title(f"{name} (slice {peak[axis]})", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        for text, x, y in ((right, 0.98, 0.5), (left, 0.02, 0.5), (up, 0.5, 0.97), (down, 0.5, 0.03)):
            ax.text(x, y, text, color="white", fontsize=8, weight="bold", ha="center", va="center",
                    transform=ax.transAxes)
    colour_bar = figure.add_axes((0.3, top - 0.24, 0.4, 0.01))
    bar = figure.colorbar(image, cax=colour_bar, orientation="horizontal", ticks=np.linspace(low, high, 3))
    bar.ax.set_xticklabels([f"{v:.3g}" for v in np.linspace(low, high, 3)])
    bar.set_label(f"importance: transparent below the map's median ({low:.2f}), full colour in its top 10 % "
                  f"(>= {high:.2f})", fontsize=7)
    bar.ax.tick_params(labelsize=7)


def _registration_check(figure, template_scan: np.ndarray, bottom: float) -> None:
    """The scan on the template grid with the template brain's outline: a registration
    that failed shows the outline off the brain."""
    import nibabel as nib

    from .space.template import load_template, mni_grid

    kit = load_template(2)
    _, affine = mni_grid(2)
    data = np.asarray(nib.as_closest_canonical(nib.Nifti1Image(template_scan, affine)).dataobj, np.float32)
    brain = np.asarray(nib.as_closest_canonical(nib.Nifti1Image(kit.brain.astype(np.float32), affine)).dataobj)
    centre = [s // 2 for s in data.shape]
    figure.text(0.05, bottom + 0.2, "Registration check: the template brain's outline (cyan)\n"
                                      "on the scan as the model saw it", fontsize=8.5, va="bottom")
    vmax = float(np.percentile(data[data > 0], 99.5)) if (data > 0).any() else 1.0
    for n, axis in enumerate((2, 1, 0)):
        ax = figure.add_axes((0.05 + n * 0.145, bottom, 0.14, 0.18))
        index = [slice(None)] * 3
        index[axis] = centre[axis]
        ax.imshow(data[tuple(index)].T, cmap="gray", origin="lower", vmin=0, vmax=vmax, aspect="equal")
        ax.contour(brain[tuple(index)].T, levels=[0.5], colors="cyan", linewidths=0.7, origin="lower")
        ax.set_xticks([])
        ax.set_yticks([])


def _regions(ax, regions: list[RegionScore], population: dict[str, float]) -> None:
    ax.axis("off")
    ax.set_title("Regions by their share of the map's top 10 %\n(0.10: what a random map gives)", fontsize=8.5,
                 loc="left")
    header = ["region", "this scan", "population"] if population else ["region", "this scan"]
    rows = [[_region_label(r.region), f"{r.top_share:.2f}",
             *([f"{population[r.region]:.2f}" if r.region in population else "-"] if population else [])]
            for r in regions[:TOP_REGIONS]]
    table = ax.table(cellText=rows, colLabels=header, loc="upper left", cellLoc="left",
                     colWidths=[0.62, 0.19, 0.19][:len(header)])
    table.auto_set_font_size(False)
    table.set_fontsize(7.5)
    table.scale(1, 1.3)


def _region_label(region: str) -> str:
    """An atlas name short enough for the table ("Cingulate Gyrus, posterior division" -> "... posterior")."""
    return _shorten(region.replace("_", " ").replace(" division", "").replace(",", ""), 34)


def _footer(ax, card, model_name: str) -> None:
    ax.axis("off")
    sums = ", ".join(f"{name} {digest[:12]}" for name, digest in card.weights.items())
    trained = card.training.get("predictor", {}).get("data", "not recorded")
    lines = [f"Model: {model_name} (sha256: {sums})",
             *textwrap.wrap(f"Predictor trained on: {trained}", 120)[:3],
             *textwrap.wrap("Interval: split-conformal prediction interval of the chronological age of people whose "
                            "scans read like this one (held-out subjects in the model card); centile: the corrected "
                            "gap among theirs. Both hold for scans like the calibration subjects only.", 120)]
    if is_bundled(card):
        lines += textwrap.wrap(BUNDLED_STATEMENT, 120)
    ax.text(0, 1, "\n".join(lines), fontsize=6.8, va="top", color="0.2", transform=ax.transAxes)


def is_bundled(card) -> bool:
    """Whether ``card`` is the bundled model's (by its weights' checksums, wherever
    the folder was copied to): its pages carry ``BUNDLED_STATEMENT``."""
    return bool(card.weights) and card.weights == _bundled_weights()


@lru_cache(maxsize=1)
def _bundled_weights() -> dict[str, str]:
    """The bundled card's checksums, read once (every page of a cohort run asks)."""
    from .model.bundle import bundled_model_dir
    from .model.card import read_card

    return read_card(bundled_model_dir()).weights


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else "..." + text[-(width - 3):]


def save_page(figure, path: str | Path) -> Path:
    """Write ``figure`` to ``path`` (PDF or PNG by suffix) atomically."""
    path = Path(path)
    kind = path.suffix.lower().lstrip(".")
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format=kind, dpi=150 if kind == "png" else None)
    return path


# ------------------------------------------------------------------ cohort summary
def draw_summary(results: list, card, model_name: str):
    """The cohort page: age vs predicted age with intervals, and the scans that failed QC."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=PAGE_SIZE)
    aged = [r for r in results if r.predicted_age is not None]
    failed = [r for r in results if r.predicted_age is None]
    figure.text(0.05, 0.965, f"Brain age reports: {_scans(len(results))}", fontsize=16, weight="bold")
    figure.text(0.05, 0.945, f"{_dt.date.today().isoformat()}   napari-brainage {__version__}   model: "
                             f"{_shorten(model_name, 50)}   {len(aged)} with a predicted age, {len(failed)} without "
                             "(failed QC or unreadable)", fontsize=8, color="0.3")
    ax = figure.add_axes((0.1, 0.52, 0.8, 0.38))
    with_age = [r for r in aged if r.age is not None]
    if with_age:
        x = np.array([r.age for r in with_age])
        y = np.array([r.predicted_age for r in with_age])
        error = None
        if all(r.interval_low is not None for r in with_age):
            low = np.array([r.interval_low for r in with_age])
            error = [y - low, np.array([r.interval_high for r in with_age]) - y]
        ax.errorbar(x, y, yerr=error, fmt="o", ms=3, color="tab:blue", ecolor="0.7", elinewidth=0.8,
                    label="scans (interval)" if error is not None else "scans")
        span = np.array([min(x.min(), y.min()) - 2, max(x.max(), y.max()) + 2])
        ax.plot(span, span, color="0.5", ls=":", lw=0.8, label="brain age = age")
        mae = float(np.abs(y - x).mean())
        title = f"{_scans(len(with_age))} with an age: mean |brain age - age| {mae:.1f} y"
        if error is not None:
            inside = sum(r.interval_low <= r.age <= r.interval_high for r in with_age)
            title += f"; {inside} of {len(with_age)} ages inside their {with_age[0].interval_level * 100:g} % interval"
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7, frameon=False)
        ax.set_xlabel("chronological age (y)")
        ax.set_ylabel("predicted brain age (y)")
    elif aged:
        _predicted_only(ax, aged)
    else:
        ax.axis("off")
        ax.set_title("no scan has a predicted age", fontsize=9)
    listing = figure.add_axes((0.05, 0.05, 0.9, 0.4))
    listing.axis("off")
    lines = [f"Failed ({len(failed)}): no age, no map" if failed else "No scan failed."]
    for result in failed[:30]:
        lines += textwrap.wrap(f"{result.subject}: {result.error}", 125)[:3]
    if len(failed) > 30:
        lines.append(f"... and {len(failed) - 30} more (see report.csv)")
    warned = [r for r in aged if r.qc_status == "warn"]
    lines.append(f"QC warnings ({len(warned)}): " + (", ".join(r.subject for r in warned[:20]) or "none"))
    unaged = [r for r in aged if r.age is None]  # not on the chart when others have an age
    if unaged and with_age:
        lines += textwrap.wrap(f"Without a chronological age ({len(unaged)}): "
                               + ", ".join(f"{r.subject} {_age_text(r)}" for r in unaged[:20])
                               + (" ..." if len(unaged) > 20 else ""), 125)
    listing.text(0, 1, "\n".join(lines), fontsize=7, va="top", family="monospace", transform=listing.transAxes)
    return figure


def _scans(n: int) -> str:
    return f"{n} scan" if n == 1 else f"{n} scans"


def _age_text(result) -> str:
    """A predicted age and, when there is one, its interval: "64.5 y (59.7-69.3)"."""
    text = f"{result.predicted_age:.1f} y"
    if result.interval_low is not None:
        text += f" ({result.interval_low:.1f}-{result.interval_high:.1f})"
    return text


def _predicted_only(ax, aged: list) -> None:
    """No scan has a chronological age: each scan's predicted age (and interval) on one row."""
    shown = aged[:30]
    y = np.arange(len(shown))[::-1]
    x = np.array([r.predicted_age for r in shown])
    error = None
    if all(r.interval_low is not None for r in shown):
        error = [x - np.array([r.interval_low for r in shown]), np.array([r.interval_high for r in shown]) - x]
    ax.errorbar(x, y, xerr=error, fmt="o", ms=3, color="tab:blue", ecolor="0.7", elinewidth=0.8)
    ax.set_yticks(y, [_shorten(r.subject, 24) for r in shown], fontsize=7)
    ax.set_ylim(-1, len(shown))
    ax.set_xlabel("predicted brain age (y)")
    more = f" (first 30 of {len(aged)})" if len(aged) > 30 else ""
    ax.set_title(f"no scan has a chronological age: predicted brain ages{more}", fontsize=9)
