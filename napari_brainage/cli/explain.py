"""``napari-brainage explain``: an importance map on each scan's own grid."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ._common import (
    INPUT_HELP,
    add_analysis_arguments,
    refuse_existing,
    refuse_file_as_folder,
    resuming,
    run_options,
    say,
)

NAME = "explain"
HELP = "write voxel importance maps (1 - noise mask, or a Captum baseline) on each scan's grid"


DESCRIPTION = HELP + "." + INPUT_HELP
#: In --out: the options the maps were made with (``cohort.run_record``), checked by --resume.
RECORD = ".explain.run.json"


def add_arguments(parser) -> None:
    add_analysis_arguments(parser, out="DIR", method=True, workers=False, interval=False)


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from ..cohort import keep_record, output_lock, run_record
    from ..errors import describe_error
    from ..inference import collect_inputs, importance_map, load_model, map_model_id, prepare_input
    from ..io import load_volume, modified_after, save_volume
    from ..options import Method, map_description

    options = run_options(args)
    out = Path(args.out)
    refuse_file_as_folder(out)  # not "[Errno 17] File exists", nor a folder named "map.nii.gz"
    inputs = collect_inputs(args.inputs)
    targets = [out / f"{item.subject}_importance.nii.gz" for item in inputs]
    replace = set()  # maps a resumed run replaces: their scan changed since
    if args.resume:  # maps are written atomically: one that exists is complete
        replace = {target for item, target in zip(inputs, targets) if modified_after(item.path, target)}
        kept = [(item, target) for item, target in zip(inputs, targets) if not target.exists() or target in replace]
        say(resuming("explain", len(inputs) - len(kept), len(inputs), len(replace), "their scan changed since"))
        inputs, targets = [item for item, _ in kept], [target for _, target in kept]
    for target in targets:
        if target not in replace:
            refuse_existing(target, args.overwrite)
    out.mkdir(parents=True, exist_ok=True)  # refuse_file_as_folder checked it can be written
    with output_lock(out):  # one run at a time writes the folder
        # The maps of a resumed run must be made as the folder's others were.
        keep_record(out / RECORD, run_record(options, maps=True), args.resume, out)
        model, device = load_model(options.model_dir, options.device.value,
                                   need_noise_model=options.method is Method.NOISE)  # Captum: the predictor only
        failed = 0
        for i, (item, target) in enumerate(zip(inputs, targets), 1):
            tic = time.monotonic()
            try:
                volume = load_volume(item.path)
                prepared = prepare_input(volume, options.preprocessing.value, model.card.contrasts)
                quality = prepared.quality
                save_volume(importance_map(volume, model, device, prepared=prepared, method=options.method.value),
                            target, overwrite=args.overwrite or target in replace,
                            description=map_description(options.method, quality.status,
                                                        map_model_id(model.card, options.method.value)))
                say(f"explain {i}/{len(inputs)} {item.subject}: {target} ({time.monotonic() - tic:.2f} s)")
                if quality.status != "pass":
                    say(f"explain {item.subject}: QC: {quality.summary()}")
            except Exception as err:  # this scan's failure is logged; the others go on (Ctrl-C still stops)
                failed += 1
                say(f"explain {i}/{len(inputs)} {item.subject}: error: {describe_error(err)}")
    print(f"napari-brainage explain: {len(inputs) - failed} of {len(inputs)} maps in {out}; {failed} failed")
    return 1 if failed else 0
