"""Held-out evaluation of a model folder on a synthetic cohort with ground truth.

    .venv/bin/napari-brainage synth /tmp/heldout --n 200 --seed 9999   # a seed no training used
    .venv/bin/python benchmarks/evaluate_model.py --cohort /tmp/heldout \
        [--model napari_brainage/bundled_model] [--update-card]

Prints, and with --update-card writes into the model card:
* predictor MAE against chronological age, the generator's irreducible error
  (mean |brain_age - age| of the same subjects) and their ratio; correlation of
  the predicted gap (predicted - age) with the true gap (brain_age - age);
* localisation: AUROC, average precision (AP) and Dice@GT (``metrics``), within
  the brain, of each subject's importance map against that subject's own
  ground truth (``ground_truth/subjects/``: the ageing union moved by the
  subject's warp; cohorts made before it existed fall back to the template's
  union) and of the population map against the template's union, beside two
  nulls measured in the same run and scored the same way: the depth-only map
  (``metrics.depth_map``: each voxel's distance to the brain's edge, no model,
  no subject) and the population map used as every subject's map; chance AP is
  the truth's share of the brain. A reference row scores each subject's own
  truth against the template's union: what a perfect subject map would get
  from the template's truth. The atlas
  structures ranked by the population map (share in its top 10 %), next to the
  ranking of the ground-truth mask itself (what a perfect map would give);
* CPU time per scan for a predicted age and for an importance map (2 mm input,
  model already loaded; medians over the cohort), with the bare network
  forward time measured in the same run as the baseline.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from napari_brainage.inference import (  # noqa: E402
    collect_inputs,
    importance_in_model_space,
    importance_map,
    load_model,
    predict_age,
)
from napari_brainage.io import load_volume  # noqa: E402
from napari_brainage.metrics import depth_map, localisation, relevance_mass  # noqa: E402
from napari_brainage.model.card import write_card  # noqa: E402
from napari_brainage.population import rank_regions  # noqa: E402
from napari_brainage.space.grid import to_model_input, uncrop  # noqa: E402
from napari_brainage.space.template import load_template  # noqa: E402
from napari_brainage.stats import RunningStats  # noqa: E402
from napari_brainage.synthetic.cohort import read_ground_truth, subject_truth_path  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cohort", required=True, type=Path, help="folder made by napari-brainage synth")
    parser.add_argument("--model", type=Path, default=ROOT / "napari_brainage" / "bundled_model")
    parser.add_argument("--limit", type=int, help="evaluate only the first N subjects")
    parser.add_argument("--update-card", action="store_true", help="store the figures in the model card")
    args = parser.parse_args()

    torch.set_num_threads(2)
    model, device = load_model(args.model, "cpu", need_noise_model=True)
    inputs = collect_inputs([args.cohort / "participants.csv"])[: args.limit]
    truth_rows = {r["subject"]: r for r in csv.DictReader(open(args.cohort / "participants.csv"))}
    kit = load_template(2)
    # Each ageing region's own truth, their union, and the diffuse cortical thinning the union leaves out.
    parts = read_ground_truth(args.cohort)
    union = parts.pop("union")
    brain = kit.brain & (uncrop(np.ones(model.card.input.crop_shape), model.card.input) > 0)

    # Each subject's map is scored against the subject's own truth (the union moved by
    # the subject's warp) when the cohort has it; the template's union would cap a
    # perfect subject map's AP near 0.53 (the nuisance moves the thin truth 1-2 voxels).
    own_truth = all(subject_truth_path(args.cohort, item.subject).exists() for item in inputs)
    predicted, ages, brain_ages, subject_scores, masses = [], [], [], [], []
    null_scores: dict[str, list[dict[str, float]]] = {"depth": [], "population": [], "truth_moved": []}
    subject_maps = []
    t_predict, t_map, t_forward = [], [], []
    population = RunningStats(kit.shape)
    for i, item in enumerate(inputs):
        volume = load_volume(item.path)
        tic = time.perf_counter()
        result = predict_age(volume, model, device, item.age)
        t_predict.append(time.perf_counter() - tic)
        tic = time.perf_counter()
        importance_map(volume, model, device)  # the full path: model space and back to the scan
        t_map.append(time.perf_counter() - tic)
        x = torch.from_numpy(to_model_input(volume, model.card.input))[None, None]
        with torch.no_grad():
            tic = time.perf_counter()
            model.predictor(x)
            t_forward.append(time.perf_counter() - tic)
        full = uncrop(importance_in_model_space(volume, model, device), model.card.input)
        population.add(full)
        if own_truth:
            truth = load_volume(subject_truth_path(args.cohort, item.subject)).data.astype(bool)
            domain = brain & (volume.data > 0)
            null_scores["depth"].append(localisation(depth_map(domain, 2.0), truth, domain))
            null_scores["truth_moved"].append(localisation(truth.astype(np.float32), union, brain))
            subject_maps.append((truth, domain))
        else:
            truth, domain = union, brain
        subject_scores.append(localisation(full, truth, domain))
        masses.append(relevance_mass(full, truth, domain))
        predicted.append(result.predicted_age)
        ages.append(item.age)
        brain_ages.append(float(truth_rows[item.subject]["brain_age"]))
        if (i + 1) % 25 == 0:
            print(f"evaluated {i + 1}/{len(inputs)}", file=sys.stderr)

    predicted, ages, brain_ages = map(np.array, (predicted, ages, brain_ages))
    mae = float(np.abs(predicted - ages).mean())
    irreducible = float(np.abs(brain_ages - ages).mean())
    gap_r = float(np.corrcoef(predicted - ages, brain_ages - ages)[0, 1])
    population_map = population.mean.astype(np.float32)
    subject = {key: np.array([s[key] for s in subject_scores]) for key in ("auroc", "ap", "dice_at_gt")}
    population_scores = localisation(population_map, union, brain)
    depth = depth_map(brain, 2.0)
    depth_scores = localisation(depth, union, brain)
    if own_truth:  # the nulls for subject maps, against the same subject truths
        null_scores["population"] = [localisation(population_map, truth, domain) for truth, domain in subject_maps]
        subject_null = {name: {key: float(np.mean([s[key] for s in rows])) for key in ("auroc", "ap", "dice_at_gt")}
                        for name, rows in null_scores.items()}
    else:
        subject_null = {"depth": depth_scores, "population": population_scores}
    chance_ap = float(union[brain].mean())
    ranked = rank_regions(population_map, kit)
    # A perfect map is the ageing mask itself: its ranking is the reference the
    # map's ranking should reproduce.
    truth_ranked = rank_regions(union.astype(np.float32), kit)
    metrics = {
        "heldout_cohort": f"{args.cohort.name}: {len(inputs)} synthetic subjects (2 mm)",
        "mae_years": round(mae, 3),
        "irreducible_mae_years": round(irreducible, 3),
        "mae_ratio_to_irreducible": round(mae / irreducible, 3),
        "brain_age_mae_years": round(float(np.abs(predicted - brain_ages).mean()), 3),
        "gap_correlation": round(gap_r, 3),
        "subject_auroc_mean": round(float(subject["auroc"].mean()), 4),
        "subject_auroc_min": round(float(subject["auroc"].min()), 4),
        "subject_ap_mean": round(float(subject["ap"].mean()), 4),
        "subject_ap_min": round(float(subject["ap"].min()), 4),
        "subject_dice_at_gt_mean": round(float(subject["dice_at_gt"].mean()), 4),
        "population_auroc": round(population_scores["auroc"], 4),
        "population_ap": round(population_scores["ap"], 4),
        "population_dice_at_gt": round(population_scores["dice_at_gt"], 4),
        "null_depth_auroc": round(depth_scores["auroc"], 4),
        "null_depth_ap": round(depth_scores["ap"], 4),
        "null_depth_dice_at_gt": round(depth_scores["dice_at_gt"], 4),
        "chance_ap": round(chance_ap, 4),
        "subject_truth": "each subject's own (the union moved by its warp)" if own_truth else "the template's union",
        "subject_null_depth_ap": round(subject_null["depth"]["ap"], 4),
        "subject_null_depth_dice_at_gt": round(subject_null["depth"]["dice_at_gt"], 4),
        "subject_null_population_ap": round(subject_null["population"]["ap"], 4),
        "subject_null_population_dice_at_gt": round(subject_null["population"]["dice_at_gt"], 4),
        "population_relevance_mass": round(relevance_mass(population_map, union, brain), 4),
        "subject_relevance_mass_mean": round(float(np.mean(masses)), 4),
        "top_regions": [s.region for s in ranked[:5]],
        "ground_truth_top_regions": [s.region for s in truth_ranked[:5]],
        "hippocampus_rank": 1 + [s.region for s in ranked].index("Hippocampus"),
        "seconds_predict_median": round(float(np.median(t_predict)), 4),
        "seconds_map_median": round(float(np.median(t_map)), 4),
        "seconds_bare_forward_median": round(float(np.median(t_forward)), 4),
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    print(json.dumps(metrics, indent=2))
    print()
    print("| figure | value | target |")
    print("|---|---|---|")
    print(f"| MAE vs age / irreducible | {mae:.2f} / {irreducible:.2f} y = {mae / irreducible:.2f}x | <= 1.25x |")
    print(f"| gap correlation | {gap_r:.3f} | >= 0.7 |")
    print()
    print(f"Subject maps are scored against {metrics['subject_truth']}, population maps against the "
          "template's union; both within the brain.")
    print()
    print("| map | subject AUROC, mean (min) | subject AP, mean (min) "
          "| subject Dice@GT | population AUROC | population AP | population Dice@GT |")
    print("|---|---|---|---|---|---|---|")
    print(f"| noise model | {subject['auroc'].mean():.3f} ({subject['auroc'].min():.3f}) | {subject['ap'].mean():.3f} "
          f"({subject['ap'].min():.3f}) | {subject['dice_at_gt'].mean():.3f} | {population_scores['auroc']:.3f} "
          f"| {population_scores['ap']:.3f} | {population_scores['dice_at_gt']:.3f} |")
    pop_null, depth_null = subject_null["population"], subject_null["depth"]
    print(f"| null: the population map as every subject's map | {pop_null['auroc']:.3f} "
          f"| {pop_null['ap']:.3f} | {pop_null['dice_at_gt']:.3f} | | | |")
    print(f"| null: depth only (distance to the brain's edge) | {depth_null['auroc']:.3f} | {depth_null['ap']:.3f} "
          f"| {depth_null['dice_at_gt']:.3f} | {depth_scores['auroc']:.3f} | {depth_scores['ap']:.3f} "
          f"| {depth_scores['dice_at_gt']:.3f} |")
    if own_truth:
        moved = subject_null["truth_moved"]
        print(f"| reference: each subject's own truth scored against the template's union | {moved['auroc']:.3f} "
              f"| {moved['ap']:.3f} | {moved['dice_at_gt']:.3f} | | | |")
    print(f"| chance | 0.500 | {chance_ap:.3f} | {chance_ap:.3f} | 0.500 | {chance_ap:.3f} | {chance_ap:.3f} |")
    print()
    # Which part of the truth the map finds (``benchmarks/signal_sources.py`` says which
    # of them the predictor reads).
    if parts:
        print("Population maps against each part of the truth (template space, within the brain):")
        print()
        print("| truth | share of the brain | noise model AUROC / AP | null: depth only AUROC / AP |")
        print("|---|---|---|---|")
        metrics["population_by_region"] = {}
        for name, part in parts.items():
            mine, null = localisation(population_map, part, brain), localisation(depth, part, brain)
            metrics["population_by_region"][name] = {"auroc": round(mine["auroc"], 4), "ap": round(mine["ap"], 4),
                                                     "null_depth_ap": round(null["ap"], 4)}
            print(f"| {name} | {part[brain].mean():.3f} | {mine['auroc']:.3f} / {mine['ap']:.3f} "
                  f"| {null['auroc']:.3f} / {null['ap']:.3f} |")
        print()
    print(f"| top regions | {', '.join(metrics['top_regions'][:3])} (hippocampus #{metrics['hippocampus_rank']}) "
          f"| ground truth's own: {', '.join(metrics['ground_truth_top_regions'][:3])} |")
    print(f"| s per predicted age (bare forward) | {metrics['seconds_predict_median']:.3f} "
          f"({metrics['seconds_bare_forward_median']:.3f}) | < 0.3 |")
    print(f"| s per importance map | {metrics['seconds_map_median']:.3f} | < 1 |")
    if args.update_card:
        model.card.metrics = metrics
        write_card(model.card, args.model)
        print(f"updated {args.model / 'model_card.json'}", file=sys.stderr)


if __name__ == "__main__":
    main()
