"""Localisation and faithfulness of the six importance methods on ground truth.

For each held-out synthetic subject and each method (``explain.METHODS``):

* subject AUROC, average precision (AP) and Dice@GT: the map's values as scores
  for the ground-truth ageing union, within the brain (``metrics``; the same
  definitions as benchmarks/evaluate_model.py);
* relevance mass: share of the map's total inside the ground truth;
* population AUROC, AP and Dice@GT: the same for the mean map over the subjects;
* two nulls in the same table (issue 18): the depth-only map
  (``metrics.depth_map``) and the noise model's population map used as every
  subject's map; and chance (AP = the truth's share of the brain);
* faithfulness (deletion): the top k % of brain voxels by the map (k = 1, 2, 5,
  10, 20) are replaced by a blurred copy of the scan (Gaussian, sigma 3 voxels:
  removes detail without an out-of-distribution hole), and the change in
  predicted age |f(x') - f(x)| is recorded; the area under that curve (mean
  over k, years) is divided by the same area for a random voxel order: > 1
  means the map found voxels the prediction depends on;
* seconds per map (model space, model loaded, this CPU).

Each method runs as the plugin runs it: the noise model's map averaged over the
scan and its mirror image, the baselines single-pass as published. ``--mirror
on`` mirror-averages the baselines too (rows labelled so), ``--mirror off``
runs the noise model single-pass: with ``--merge`` these add like-for-like rows.

Writes a markdown table (stdout and --table) and a bar plot (--plot) with the
nulls as reference lines.

Usage: python benchmarks/attribution_methods.py --cohort HELDOUT [--limit 100] \
           [--table docs/attribution_methods.md] [--plot docs/attribution_methods.png]

After retraining only the noise model, ``--methods noise --merge`` re-runs that
one method and replaces its row in the existing --table (the baselines' maps
depend on the predictor alone, so their rows stay valid while the predictor and
the subjects are the same); the time ratios are recomputed and the table says
which rows came from which run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DELETION_PERCENTS = (1, 2, 5, 10, 20)
OWN_TRUTH_NOTE = "; subject maps scored against each subject's own union (moved by its warp)"


def deletion_curve(x, order_scores, predictor, blurred, inside) -> float:
    """Mean |change in predicted age| (standardised units) over DELETION_PERCENTS."""
    import torch

    flat_inside = np.flatnonzero(inside)
    ranked = flat_inside[np.argsort(-order_scores.reshape(-1)[flat_inside], kind="stable")]
    with torch.no_grad():
        base = predictor(x).item()
        changes = []
        for percent in DELETION_PERCENTS:
            chosen = ranked[: max(1, int(len(ranked) * percent / 100))]
            perturbed = x.clone().reshape(-1)
            perturbed[chosen] = blurred.reshape(-1)[chosen]
            changes.append(abs(predictor(perturbed.reshape(x.shape)).item() - base))
    return float(np.mean(changes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cohort", required=True, type=Path)
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--methods", nargs="+", default=None)
    parser.add_argument("--table", type=Path)
    parser.add_argument("--plot", type=Path)
    parser.add_argument("--merge", action="store_true",
                        help="replace only the rows of --methods in the existing --table")
    parser.add_argument("--mirror", choices=("default", "on", "off"), default="default",
                        help="average maps with the mirrored map of the mirrored scan: the plugin's default "
                             "(noise model only), every method, or none")
    args = parser.parse_args()
    if args.merge and not (args.table and args.table.is_file() and args.methods):
        parser.error("--merge needs --methods and an existing --table")

    import torch
    from scipy import ndimage

    from napari_brainage.explain import LABELS, METHODS, MethodSettings, attribution
    from napari_brainage.inference import collect_inputs, load_model
    from napari_brainage.io import load_volume
    from napari_brainage.metrics import depth_map, localisation, relevance_mass
    from napari_brainage.space.grid import crop, to_model_input, uncrop
    from napari_brainage.space.template import load_template
    from napari_brainage.stats import RunningStats
    from napari_brainage.synthetic.cohort import read_ground_truth, subject_truth_path

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    methods = args.methods or list(METHODS)
    settings = MethodSettings(mirror_average={"default": None, "on": True, "off": False}[args.mirror])

    def label_of(method: str) -> str:
        if args.mirror == "on" and method != "noise":
            return f"{LABELS[method]}, mirror-averaged"
        if args.mirror == "off" and method == "noise":
            return f"{LABELS[method]}, single pass"
        return LABELS[method]

    model, _ = load_model(args.model, "cpu", need_noise_model=True)
    spec = model.card.input
    kit = load_template(2)
    # Each ageing region's own truth, their union, and the diffuse cortical thinning the union
    # leaves out: which part a map finds (``benchmarks/signal_sources.py``: which the predictor reads).
    parts = read_ground_truth(args.cohort)
    union = parts.pop("union")
    brain = kit.brain & (uncrop(np.ones(spec.crop_shape), spec) > 0)
    brain_crop = crop(brain, spec)
    inputs = collect_inputs([args.cohort / "participants.csv"])[: args.limit]
    # The baselines' maps depend on the predictor and the subjects: a merge must keep both.
    predictor_id = model.card.weights["predictor.pt"][:12]
    own_truth = all(subject_truth_path(args.cohort, item.subject).exists() for item in inputs)
    described = f"{len(inputs)} held-out subjects of {args.cohort.name}; predictor sha256 {predictor_id}..;"
    existing = args.table.read_text() if args.merge else ""
    if args.merge and (described not in existing or (OWN_TRUTH_NOTE in existing) != own_truth):
        parser.error(f"--merge: {args.table} was not measured with the same predictor, subjects and truth "
                     f"({described[:-1]})")
    previous = read_table(args.table) if args.merge else {}  # rows kept from the run that wrote the table
    earlier_merges = [line for line in existing.splitlines() if line.startswith("Rows re-measured")]
    rng = np.random.default_rng(0)
    depth_null = depth_map(brain, 2.0)
    depth = localisation(depth_null, union, brain)
    chance = float(union[brain].mean())

    def report(done: int):
        random_area = float(np.mean(random_deletion))
        rows = []
        for method in methods:
            s = scores[method]
            pop = localisation(population[method].mean, union, brain)
            rows.append((label_of(method), pop["auroc"], pop["ap"], pop["dice_at_gt"], float(np.mean(s["auroc"])),
                         float(np.min(s["auroc"])), float(np.mean(s["ap"])), float(np.mean(s["dice_at_gt"])),
                         float(np.mean(s["mass"])), float(np.mean(s["deletion"])) / random_area,
                         float(np.median(s["seconds"]))))
        if previous:
            measured = {r[0]: r for r in rows}
            fresh = set(measured)
            rows = [measured.get(label, old) for label, old in previous.items()]
            rows += [r for label, r in measured.items() if label not in previous]
            rows.sort(key=lambda r: table_order(r[0]))
        seconds_of = {r[0]: r[10] for r in rows}
        noise_seconds = seconds_of.get(LABELS["noise"], float("nan"))  # the plugin's noise map
        lines = [f"{done} held-out subjects of {args.cohort.name}; predictor sha256 {predictor_id}..; "
                 f"ground truth: the ageing union ({100 * chance:.1f} % of the brain)"
                 f"{OWN_TRUTH_NOTE if own_truth else ''}; "
                 f"{os.environ['OMP_NUM_THREADS']} CPU threads, torch {torch.__version__}.", "",
                 "| method | population AUROC | population AP | population Dice@GT | subject AUROC, mean (min) "
                 "| subject AP | subject Dice@GT | relevance mass | deletion AUC / random | s per map "
                 "| time vs noise model |",
                 "|---|---|---|---|---|---|---|---|---|---|---|"]
        for label, pop, pop_ap, pop_dice, mean, low, ap, dice, mass, deletion, seconds in rows:
            lines.append(f"| {label} | {pop:.3f} | {pop_ap:.3f} | {pop_dice:.3f} | {mean:.3f} ({low:.3f}) "
                         f"| {ap:.3f} | {dice:.3f} | {mass:.3f} | {deletion:.2f} | {seconds:.2f} "
                         f"| {seconds / noise_seconds:.1f}x |")
        def mean_scores(rows_):
            return {key: float(np.mean([r[key] for r in rows_])) for key in ("auroc", "ap", "dice_at_gt")}

        nulls = [("null: depth only (distance to the brain's edge)", depth, mean_scores(subject_depth))]
        if LABELS["noise"] in seconds_of and "noise" in population:  # the population map as every subject's
            mean_map = population["noise"].mean
            nulls.insert(0, ("null: the noise model's population map as every subject's map",
                             localisation(mean_map, union, brain),
                             mean_scores([localisation(mean_map, t, d) for t, d in subject_truths])))
        for label, null, per_subject in nulls:
            lines.append(f"| {label} | {null['auroc']:.3f} | {null['ap']:.3f} | {null['dice_at_gt']:.3f} "
                         f"| {per_subject['auroc']:.3f} | {per_subject['ap']:.3f} | {per_subject['dice_at_gt']:.3f} "
                         "| - | - | - | - |")
        lines.append(f"| chance | 0.500 | {chance:.3f} | {chance:.3f} | 0.500 | {chance:.3f} | {chance:.3f} "
                     "| - | - | - | - |")
        if parts:
            names = list(parts)
            lines += ["", "Population maps (AUROC / AP) against each part of the truth, measured in this run:", "",
                      "| method | " + " | ".join(f"{n} ({100 * parts[n][brain].mean():.1f} %)" for n in names) + " |",
                      "|---|" + "---|" * len(names)]
            candidates = [(label_of(m), population[m].mean) for m in methods if population[m].count]
            candidates.append(("null: depth only", depth_null))
            for label, mean_map in candidates:
                cells = [localisation(mean_map, parts[n], brain) for n in names]
                lines.append(f"| {label} | " + " | ".join(f"{c['auroc']:.3f} / {c['ap']:.3f}" for c in cells) + " |")
        lines.append("")
        lines.append(f"Deletion: random-order area = {random_area:.4f} standardised age units.")
        if previous:
            lines.append("")
            for note in earlier_merges:  # what earlier merges replaced, still true of their rows
                lines += [note, ""]
            lines.append(f"Rows re-measured on {time.strftime('%Y-%m-%d')} (with `--methods "
                         f"{' '.join(methods)}{'' if args.mirror == 'default' else ' --mirror ' + args.mirror}"
                         f" --merge`): {', '.join(sorted(fresh))}; rows not re-measured are from the "
                         "run that wrote this table, on the same predictor and subjects.")
        text = "\n".join(lines)
        print()
        print(text)
        if args.table:
            if previous and done < len(inputs):
                return rows  # never replace a full table's row with a partial one
            args.table.write_text("# Attribution methods on ground truth\n\nCommand: `python benchmarks/"
                                  f"attribution_methods.py --cohort {args.cohort.name} --limit {args.limit}`"
                                  f"{'' if done == len(inputs) else f' (partial: {done} of {len(inputs)} done)'}"
                                  "\n\n" + text + "\n")
        return rows

    scores = {m: {"auroc": [], "ap": [], "dice_at_gt": [], "mass": [], "deletion": [], "seconds": []}
              for m in methods}
    random_deletion = []
    subject_truths, subject_depth = [], []
    population = {m: RunningStats(kit.shape) for m in methods}
    for i, item in enumerate(inputs, 1):
        x_np = to_model_input(load_volume(item.path), spec)
        x = torch.from_numpy(x_np)[None, None]
        blurred = torch.from_numpy(ndimage.gaussian_filter(x_np, 3.0).astype(np.float32))
        inside = brain_crop & (x_np > 0)
        random_deletion.append(deletion_curve(x, rng.random(x_np.shape), model.predictor, blurred, inside))
        if own_truth:  # the subject's own truth, on its scan (see evaluate_model.py)
            truth = load_volume(subject_truth_path(args.cohort, item.subject)).data.astype(bool)
            domain = brain & (uncrop(x_np, spec) > 0)
        else:
            truth, domain = union, brain
        subject_truths.append((truth, domain))
        subject_depth.append(localisation(depth_map(domain, 2.0), truth, domain))
        for method in methods:
            tic = time.perf_counter()
            values = attribution(x, model, method, settings)
            scores[method]["seconds"].append(time.perf_counter() - tic)
            full = uncrop(values, spec)
            population[method].add(full)
            for key, value in localisation(full, truth, domain).items():
                scores[method][key].append(value)
            scores[method]["mass"].append(relevance_mass(full, truth, domain))
            scores[method]["deletion"].append(deletion_curve(x, values, model.predictor, blurred, inside))
        print(f"{i}/{len(inputs)} " + " ".join(f"{m} {scores[m]['ap'][-1]:.3f}" for m in methods), flush=True)
        if i % 10 == 0 or i == len(inputs):  # a table so far, in case the run is cut short
            rows = report(i)

    if args.plot:
        plot(rows, args.plot, depth, chance)


def table_order(label: str) -> tuple[int, bool]:
    """Rows in ``explain.METHODS`` order, each method as the plugin runs it before its variants."""
    from napari_brainage.explain import LABELS, METHODS

    method = next((m for m in METHODS if label.startswith(LABELS[m])), None)
    return (METHODS.index(method) if method else len(METHODS), label != LABELS.get(method))


def read_table(path: Path) -> dict[str, tuple]:
    """Method rows of a table this script wrote, by label (the same tuples report() makes);
    the null and chance rows are measured anew by every run."""
    rows = {}
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 11 or not cells[1][:1].isdigit() or cells[0].startswith(("null", "chance")):
            continue
        mean, low = cells[4].replace("(", "").replace(")", "").split()
        numbers = [float(c) for c in (cells[1], cells[2], cells[3], mean, low, *cells[5:10])]
        rows[cells[0]] = (cells[0], *numbers)
    if not rows:
        raise SystemExit(f"{path}: no method rows in this script's current format; run without --merge")
    return rows


def plot(rows, path: Path, depth: dict[str, float], chance: float) -> None:
    """Population AP, subject AP and deletion per method; the depth-only null and
    chance as reference lines on the AP panels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    labels = [r[0] for r in rows]
    for ax, column, title in zip(axes, (2, 6, 9), ("population AP", "subject AP (mean)",
                                                    "deletion AUC / random")):
        # Variants (single pass, mirror-averaged) paler than the methods as the plugin runs them.
        colours = [("#d95f02" if r[0].startswith("noise") else "#7570b3") + ("80" if table_order(r[0])[1] else "")
                   for r in rows]
        bars = ax.barh(labels, [r[column] for r in rows], color=colours)
        ax.bar_label(bars, fmt="%.3f" if column in (2, 6) else "%.2f", padding=2, fontsize=8)
        ax.set_title(title)
        if column in (2, 6):
            ax.axvline(depth["ap"], color="black", linestyle="--", linewidth=1, label="depth-only null")
            ax.axvline(chance, color="grey", linestyle=":", linewidth=1, label="chance")
            ax.set_xlim(0, 1.0)
            ax.legend(loc="lower right", fontsize=7)
        else:
            ax.set_xlim(0, max(r[column] for r in rows) * 1.18)
        ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
