"""Cohort runs: thousands of scans, bounded memory, resumable, optionally on Dask.

Every run takes one ``options.RunOptions`` (model, device, preprocessing,
importance method), the object the CLI and the widgets build.

* ``ResultsLog``: a results CSV written one row per finished subject (flushed and
  fsynced), so an interrupted run keeps what it finished; a torn last line is
  dropped on resume, and finished subjects are not redone.
* ``output_lock``: one run at a time writes an output (``.<name>.lock`` beside it,
  holding the pid); ``keep_record`` / ``run_record``: the options an output was
  made with (``.<name>.run.json``), so that ``--resume`` refuses other ones.
* ``iter_population`` / ``population_stats``: per-group running statistics
  (``stats.RunningStats``) of subjects' importance maps on the template grid,
  checkpointed atomically every few subjects, resumable; the result is a
  ``population.PopulationResult``, which writes the maps and the region table.
  The CLI, the Population widget and benchmarks all go through it.
* Execution (``parallel.executor``): in-process by default; ``workers > 1``
  starts an embedded Dask ``LocalCluster``, ``scheduler`` joins an existing
  ``dask.distributed`` cluster. Each worker process loads the model once
  (``_worker_model``).
"""

from __future__ import annotations

import csv
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from .errors import InputError, describe_error
from .inference import AgeResult, ScanInput
from .io import atomic_path
from .options import Method, RunOptions
from .parallel import executor
from .population import PopulationResult
from .stats import RunningStats

Progress = Callable[[int, int], None]


# ------------------------------------------------------------------ results log
class ResultsLog:
    """Append-only results CSV that survives interruptions."""

    def __init__(self, path: str | Path, fields: tuple[str, ...] = AgeResult.FIELDS):
        self.path, self.fields = Path(path), fields

    def finished(self) -> set[str]:
        """Subjects with a result row (failures excluded: they are retried)."""
        if not self.path.exists():
            return set()
        self._drop_torn_line()
        with open(self.path, newline="") as handle:
            reader = csv.DictReader(handle)
            columns, rows = list(reader.fieldnames or []), list(reader)
        missing = [name for name in self.fields if name not in columns]
        if missing and columns:
            if not {"subject", "error"} <= set(columns):
                raise InputError(f"{self.path}: not a results file of napari-brainage (no subject and error columns)")
            # Written by an earlier version (fewer columns: the interval, the contrast):
            # rewrite it with today's columns, the new ones empty, so the run can go on.
            with atomic_path(self.path) as tmp, open(tmp, "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=list(self.fields), extrasaction="ignore")
                writer.writeheader()
                writer.writerows({name: row.get(name, "") for name in self.fields} for row in rows)
        return {row["subject"] for row in rows if not row.get("error")}

    def _drop_torn_line(self) -> None:
        text = self.path.read_text()
        if text and not text.endswith("\n"):  # killed mid-write: drop the partial row
            with atomic_path(self.path) as tmp:
                tmp.write_text(text[: text.rfind("\n") + 1])

    @contextmanager
    def appending(self, restart: bool):
        """A writer function; ``restart`` starts a new file instead of continuing one."""
        fresh = restart or not self.path.exists() or self.path.stat().st_size == 0
        if fresh:
            with atomic_path(self.path) as tmp:
                with open(tmp, "w", newline="") as handle:
                    csv.writer(handle).writerow(self.fields)
        else:
            self._drop_torn_line()
        with open(self.path, "a", newline="") as handle:
            writer = csv.writer(handle)

            def write(result: AgeResult) -> None:
                writer.writerow(result.row())
                handle.flush()
                os.fsync(handle.fileno())

            yield write


def keep_last_row_per_subject(path: Path) -> None:
    """Keep only each subject's last row (a retried failure leaves two)."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    last = {row["subject"]: row for row in rows}
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else list(AgeResult.FIELDS))
        writer.writeheader()
        writer.writerows(last.values())


# ------------------------------------------------------------------ one run per output
#: Locks this process holds: a lock with our own pid that is not here was left by a
#: dead run whose pid the system gave to us.
_HELD: set[Path] = set()


@contextmanager
def output_lock(output: str | Path):
    """Hold ``.<name>.lock`` beside ``output`` (a file or folder) while a run writes it.

    A second run writing the same output at once is refused: their atomic rewrites
    (a torn line dropped, a retried row replaced) left the first run appending to a
    deleted file, and rows were lost while both said they were done. The lock holds
    the pid; one left by a run that died (pid gone) is taken over.
    """
    output = Path(output)
    lock = output.with_name(f".{output.name}.lock")
    _take_lock(lock, output)
    _HELD.add(lock.absolute())
    try:
        yield lock
    finally:
        _HELD.discard(lock.absolute())
        lock.unlink(missing_ok=True)


def _take_lock(lock: Path, output: Path) -> None:
    for _ in range(3):  # again after removing a dead run's lock (or one that vanished meanwhile)
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = _lock_owner(lock)
            if owner is not None:
                raise InputError(f"{output} is being written by another run (pid {owner}); wait for it to end, "
                                 f"or delete {lock} if that run is gone") from None
            lock.unlink(missing_ok=True)
            continue
        except OSError as err:  # the output's, not the hidden lock's: "No such file: '/proc/.x.csv.lock'"
            raise InputError(f"cannot write {output}: no file can be made in {lock.parent} "
                             f"({(err.strerror or type(err).__name__).lower()})") from None
        with os.fdopen(fd, "w") as handle:
            handle.write(f"{os.getpid()} {socket.gethostname()}\n")
        return
    raise InputError(f"{output}: cannot take its lock {lock}; delete it if no run is writing {output}")


def _lock_owner(lock: Path) -> str | None:
    """The pid (as text) of the live run holding ``lock``; None when that run is gone."""
    try:
        text, stamp = lock.read_text(), lock.stat().st_mtime
    except FileNotFoundError:
        return None
    pid, _, host = text.strip().partition(" ")
    if not pid.isdigit():  # just created, pid not written yet; or left empty by a crash long ago
        return "unknown" if time.time() - stamp < 10 else None
    if host and host != socket.gethostname():
        return f"{pid} on {host}"  # another machine's process: cannot be checked, so it counts
    if int(pid) == os.getpid():
        return pid if lock.absolute() in _HELD else None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return None
    except PermissionError:  # alive, another user's
        pass
    return pid


# ------------------------------------------------------------------ the options a run was made with
def run_record(options: RunOptions, maps: bool = False) -> dict[str, str]:
    """What a resumed run must repeat for its results to be one run's: --preprocess,
    the model (its weights' sha256s, as the table's ``model`` column) and, for
    importance maps, --method and the noise model."""
    from .inference import model_id
    from .model.bundle import bundled_model_dir
    from .model.card import NOISE_MODEL_FILE, read_card

    card = read_card(options.model_dir or bundled_model_dir())
    record = {"preprocess": options.preprocessing.value, "model": f"predictor {model_id(card)}"}
    if maps:
        record["model"] += f", noise model {card.weights.get(NOISE_MODEL_FILE, '')[:12]}"
        record["method"] = options.method.value
    return record


def record_path(output: str | Path) -> Path:
    """Where the options of the run writing ``output`` are kept: ``.<name>.run.json`` beside it."""
    output = Path(output)
    return output.with_name(f".{output.name}.run.json")


def keep_record(path: Path, record: dict[str, str], resuming: bool, where: str | Path,
                restart: str = "start again with --overwrite") -> None:
    """``record`` (``run_record``) written to ``path``; when ``resuming``, first
    ``InputError`` if the outputs at ``where`` were made with other options (a
    resumed table or mean would mix them: ages 1.5 y apart for one scan)."""
    if resuming:
        refuse_other_options(where, read_record(path), record, restart, EARLIER)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, indent=1) + "\n")


def read_record(path: Path) -> dict:
    """The options kept in ``path`` (``keep_record``); {} when there is none to compare with
    (an earlier version's outputs, or an unreadable file)."""
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return saved if isinstance(saved, dict) else {}


#: How a resumed cohort run names the run whose outputs it continues: stopped or finished.
EARLIER = "the earlier run"


def refuse_other_options(where: str | Path, saved: dict, current: dict[str, str],
                         restart: str = "start again with --overwrite", earlier: str = "the interrupted run") -> None:
    """``InputError`` naming the first option of ``current`` that ``saved`` (``earlier``'s)
    differs in; an option ``saved`` lacks (an earlier version's) is not checked. The
    cohort commands say "the earlier run": theirs may have finished (a refusal said
    "interrupted" of a run that had not been)."""
    for name, value in current.items():
        before = str(saved.get(name, value))
        if before == value:
            continue
        if name == "model":
            raise InputError(f"{where}: {earlier} used another model ({before}; this one is {value}); "
                             f"resume with the same --model (or {restart})")
        raise InputError(f"{where}: {earlier} used --{name} {before}, not {value}; resume with the "
                         f"same --{name} (or {restart})")


# ------------------------------------------------------------------ workers
def _worker_model(options: RunOptions, need_noise_model: bool):
    """The model of ``options``, loaded once per process (each Dask worker keeps its own),
    and again when its card changed (retrained or calibrated meanwhile)."""
    from .model.bundle import bundled_model_dir
    from .model.card import CARD_FILE

    card = Path(options.model_dir or bundled_model_dir()) / CARD_FILE
    stamp = card.stat().st_mtime_ns if card.exists() else 0
    return _cached_model(str(options.model_dir) if options.model_dir else None, options.device.value,
                         need_noise_model, stamp)


def check_run_model(options: RunOptions, need_noise_model: bool = False) -> None:
    """What every scan of a run would fail on, said once before any output: the
    device (a GPU torch does not see), a folder that is no model, a noise model
    the method needs and the folder lacks. Raises ``ModelError`` (an ``InputError``)."""
    from .model.bundle import bundled_model_dir, pick_device
    from .model.card import NOISE_MODEL_FILE, ModelError, read_card

    pick_device(options.device.value)
    folder = options.model_dir or bundled_model_dir()
    card = read_card(folder)
    if need_noise_model and NOISE_MODEL_FILE not in card.weights:
        raise ModelError(f"{folder} has no noise model ({NOISE_MODEL_FILE}), which the noise method's maps need: "
                         "train one (napari-brainage train noise-model) or choose a Captum method")


@lru_cache(maxsize=2)
def _cached_model(model_dir: str | None, device: str, need_noise_model: bool, card_stamp: int = 0):
    """The model, loaded once per process (each Dask worker keeps its own)."""
    from .inference import load_model

    try:  # inside a Dask worker: torch gets that worker's threads, not every core
        import torch
        from distributed import get_worker

        torch.set_num_threads(max(1, get_worker().state.nthreads))
    except (ImportError, ValueError):
        pass

    return load_model(model_dir, device, need_noise_model=need_noise_model)


def predict_one(item: ScanInput, options: RunOptions) -> AgeResult:
    """The age of one scan, or its failure in words (``AgeResult.failed``): never raises
    for a problem of the scan."""
    from .inference import predict_age
    from .io import load_volume

    model, torch_device = _worker_model(options, False)
    try:  # whatever goes wrong with this scan stays in its row (Ctrl-C still stops the run)
        result = predict_age(load_volume(item.path), model, torch_device, item.age, options.preprocessing.value,
                             interval_level=options.interval_level)
        result.subject = item.subject
    except Exception as err:
        result = failed_result(item, err)
    return result


def failed_result(item: ScanInput, err: Exception) -> AgeResult:
    """``AgeResult.failed`` for a results table: its ``error`` whole (``describe_error``
    cuts at 300 characters for a terminal; a cell has room for the rest) and starting
    with the scan's path, as every row's does (QC names only the file)."""
    result = AgeResult.failed(item.subject, item.path, item.age, err)
    result.error = scan_error(err, item.path)
    return result


def scan_error(err: BaseException, path: str | Path) -> str:
    """``err`` in one line, uncut, as "<path>: <reason>" whatever raised it."""
    return from_path(describe_error(err, limit=sys.maxsize), path)


def from_path(message: str, path: str | Path) -> str:
    """``message`` as "<path>: <reason>" (QC's messages name only the file)."""
    path = str(path)
    if message.startswith(f"{path}: "):
        return message
    return f"{path}: {message.removeprefix(f'{Path(path).name}: ')}"


def map_chunk(items: list[ScanInput], options: RunOptions
              ) -> tuple[dict[str, dict], list[str], list[tuple[str, str]]]:
    """Statistics (per group) of a chunk of subjects' template-space maps.

    Returns ({group: RunningStats state}, subjects done, [(subject, error)]).
    On a GPU the noise model maps the chunk in one batch; elsewhere (and for the
    Captum methods) one subject at a time.
    """
    from .population import subject_maps

    model, torch_device = _worker_model(options, options.method is Method.NOISE)
    preprocessing, method = options.preprocessing.value, options.method.value
    groups: dict[str, RunningStats] = {}
    failed: list[tuple[str, str]] = []

    def add(item: ScanInput, values: np.ndarray) -> None:
        stats = groups.get(item.group or "")
        if stats is None:
            stats = groups[item.group or ""] = RunningStats(values.shape)
        stats.add(values)

    if options.method is Method.NOISE and torch_device.type == "cuda":
        for item, values in batched_noise_maps(items, model, torch_device, preprocessing, failed):
            add(item, values)
    else:
        for item in items:
            for values in subject_maps([item], model, torch_device,
                                       on_skip=lambda s, e: failed.append((s, describe_error(e))),
                                       preprocessing=preprocessing, method=method):
                add(item, values)
    return {g: s.state() for g, s in groups.items()}, [i.subject for i in items], failed


def batched_noise_maps(items: list[ScanInput], model, device, preprocessing: str,
                       failed: list[tuple[str, str]], batch_size: int = 8):
    """(item, template-space noise-model map) for ``items``, the network run on batches."""
    import torch

    from .explain import noise_importance
    from .inference import prepare_input
    from .io import load_volume
    from .space.grid import uncrop

    spec = model.card.input
    ready = []
    for item in items:
        try:
            prepared = prepare_input(load_volume(item.path), preprocessing, model.card.contrasts)
            ready.append((item, prepared.model_input(spec)))
        except Exception as err:
            failed.append((item.subject, describe_error(err)))
    for start in range(0, len(ready), batch_size):
        batch = ready[start:start + batch_size]
        try:  # a batch the network cannot map (out of GPU memory...) fails its subjects, not the run
            x = torch.from_numpy(np.stack([array for _, array in batch]))[:, None].to(device)
            maps = [uncrop(values, spec) for values in noise_importance(x, model.noise_model)]
        except Exception as err:
            failed += [(item.subject, describe_error(err)) for item, _ in batch]
            continue
        yield from zip((item for item, _ in batch), maps)


# ------------------------------------------------------------------ runs
def _still_done(inputs: list[ScanInput], done: set[str], table: Path, result_of: Callable[[ScanInput], Path]
                ) -> set[str]:
    """The subjects of ``done`` (finished rows of ``table``) a resumed run can keep: the
    same path and age as in their row (an age corrected in the participants table
    since changes the gaps), and a result (``result_of``) that exists and is newer
    than the scan file (``io.modified_after``: a scan replaced since is redone)."""
    from .io import modified_after

    with open(table, newline="") as handle:
        rows = {row["subject"]: row for row in csv.DictReader(handle)}
    return {item.subject for item in inputs
            if item.subject in done and rows[item.subject]["path"] == str(item.path)
            and _same_age(rows[item.subject].get("age"), item.age)
            and result_of(item).exists() and not modified_after(item.path, result_of(item))}


def _same_age(cell: str | None, age: float | None) -> bool:
    """Whether a results row's age cell (3 decimals, empty when unknown) is ``age``."""
    if not (cell or "").strip():
        return age is None
    return age is not None and abs(float(cell) - age) < 5e-4


def predict_cohort(inputs: list[ScanInput], out: str | Path, options: RunOptions | None = None,
                   resume: bool = False, workers: int = 1, scheduler: str | None = None,
                   progress: Progress | None = None,
                   on_resume: Callable[[int, int], None] | None = None) -> list[AgeResult]:
    """Predicted ages of ``inputs`` into ``out`` (CSV, ``AgeResult.FIELDS``), one row per
    finished subject, flushed as it finishes; returns this run's results (a failed
    scan's row has no age and its reason in ``error``). ``resume``: subjects
    already in ``out`` without an error are not redone; ``on_resume(kept, redone)``
    is then told how many rows are kept and how many finished ones are redone (their
    scan, path or age changed since). ``progress(done, total)`` counts this run's scans.
    Without ``resume`` an existing table is replaced (the CLI refuses that unless
    --overwrite). Results come back in the order of ``inputs``, whatever order
    parallel workers finish in (the table's rows are in finishing order).

    Raises ``ModelError`` before the table is started when the model or device
    cannot be used (``check_run_model``)."""
    options = options or RunOptions()
    check_run_model(options)
    log = ResultsLog(out)
    record = run_record(options)
    with output_lock(log.path):  # before anything reads or rewrites the table
        resuming = resume and log.path.exists()
        done = log.finished() if resume else set()
        if resuming:
            _check_same_run(log.path, options)
            refuse_other_options(log.path, read_record(record_path(log.path)), record, earlier=EARLIER)
            finished = {item.subject for item in inputs} & done
            done = _still_done(inputs, done, log.path, lambda item: log.path)
            if on_resume:
                on_resume(len(done), len(finished - done))
        todo = [item for item in inputs if item.subject not in done]
        results = []
        # The cluster first: a scheduler that cannot be reached is said before the
        # table and its record are started (they were left behind, and the next run
        # was refused for an existing table of no rows).
        with executor(workers, scheduler) as run:
            keep_record(record_path(log.path), record, False, log.path)
            with log.appending(restart=not resume) as write:
                # This run's count: a resumed run that redoes 1 of 8 scans said "8/8" at its end.
                for n, result in enumerate(run(predict_one, [(i, options) for i in todo]), 1):
                    write(result)
                    results.append(result)
                    if progress:
                        progress(n, len(todo))
        keep_last_row_per_subject(log.path)
    order = {item.subject: i for i, item in enumerate(todo)}
    return sorted(results, key=lambda result: order.get(result.subject, len(order)))


#: The results table of a ``report`` run, beside its pages.
REPORT_CSV = "report.csv"
#: The cohort page of a ``report`` run.
SUMMARY_PAGE = "summary.pdf"


def report_cohort(inputs: list[ScanInput], out_dir: str | Path, options: RunOptions | None = None,
                  resume: bool = False, png: bool = False, progress: Progress | None = None,
                  on_resume: Callable[[int, int], None] | None = None,
                  say: Callable[[str], None] | None = None) -> list[AgeResult]:
    """One page per scan into ``out_dir`` (``<subject>_report.pdf``, and ``.png`` when
    ``png``; ``report_page``), each scan's row in ``report.csv`` (written after its
    page, so a row means its page exists), and ``summary.pdf`` over every row.

    A scan failing QC gets a page saying why, with no age or map; a scan that cannot
    be read gets a row with the error and no page; neither stops the run.
    ``resume``: scans already in ``report.csv`` without an error are not redone
    (``on_resume`` and ``progress`` as in :func:`predict_cohort`). A redone page's
    PNG from an earlier ``png`` run is drawn again (``say`` names them): it showed
    the old page. Returns this run's results.
    """
    options = options or RunOptions()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    log = ResultsLog(out_dir / REPORT_CSV)
    with output_lock(log.path):  # before anything reads or rewrites the table
        return _report_locked(inputs, out_dir, log, options, resume, png, progress, on_resume, say)


def _report_locked(inputs: list[ScanInput], out_dir: Path, log: ResultsLog, options: RunOptions, resume: bool,
                   png: bool, progress: Progress | None, on_resume: Callable[[int, int], None] | None,
                   say: Callable[[str], None] | None) -> list[AgeResult]:
    """``report_cohort`` once it holds the lock of ``report.csv``."""
    from .io import load_volume
    from .report_page import build_report, draw_page, draw_summary, model_label, page_path, save_page

    resuming = resume and log.path.exists()
    done = log.finished() if resume else set()
    if resuming:
        _check_same_run(log.path, options)
        # Done means its page is there, for the same file, unchanged since: a deleted
        # page, a subject whose path changed or a scan replaced since is redone.
        finished = {item.subject for item in inputs} & done
        done = _still_done(inputs, done, log.path, lambda item: page_path(out_dir, item.subject))
    keep_record(record_path(log.path), run_record(options, maps=True), resuming, log.path)
    if resuming and on_resume:  # once the options are known to be the earlier run's
        on_resume(len(done), len(finished - done))
    todo = [item for item in inputs if item.subject not in done]
    model, torch_device = _worker_model(options, options.method is Method.NOISE)
    model_name = model_label(options.model_dir)
    results, redrawn = [], []
    with log.appending(restart=not resume) as write:
        for n, item in enumerate(todo, 1):
            try:  # whatever goes wrong with this scan stays in its row
                report = build_report(load_volume(item.path), item.age, model, torch_device,
                                      options.preprocessing.value, options.method.value, options.interval_level,
                                      subject=item.subject)
                page = draw_page(report, model.card, model_name, options.interval_level)
                save_page(page, page_path(out_dir, item.subject))
                picture = page_path(out_dir, item.subject, "png")
                if png or picture.exists():  # an earlier --png run's picture showed the page replaced now
                    save_page(page, picture)
                    if not png:
                        redrawn.append(item.subject)
                result = report.result
                if result.error:  # a QC failure has its page, and its row begins as every row's does
                    result.error = from_path(result.error, item.path)
            except Exception as err:
                result = failed_result(item, err)
            write(result)
            results.append(result)
            if progress:
                progress(n, len(todo))
    if redrawn and say:
        say(f"redrew the PNG of {len(redrawn)} page(s) an earlier --png run had made, which showed the pages "
            f"replaced now: {', '.join(redrawn[:5])}{' ...' if len(redrawn) > 5 else ''}")
    keep_last_row_per_subject(log.path)
    with open(log.path, newline="") as handle:
        everyone = [AgeResult.from_row(row) for row in csv.DictReader(handle)]
    save_page(draw_summary(everyone, model.card, model_name), out_dir / SUMMARY_PAGE)
    return results


def _check_same_run(path: Path, options: RunOptions) -> None:
    """``InputError`` when the results in ``path`` were made at another interval level
    or by another model: a resumed table (and its summary) would mix them."""
    if not path.exists():
        return
    from .inference import model_id
    from .model.bundle import bundled_model_dir
    from .model.card import read_card

    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    levels = sorted({row["interval_level"] for row in rows if row.get("interval_level")
                     and abs(float(row["interval_level"]) - options.interval_level) > 5e-4})
    if levels:
        raise InputError(f"{path}: the earlier run used --interval-level {levels[0]}, not "
                         f"{options.interval_level:g}; resume with the same level (or start again with --overwrite)")
    current = model_id(read_card(options.model_dir or bundled_model_dir()))
    models = sorted({row["model"] for row in rows if row.get("model") and row["model"] != current})
    if models:
        raise InputError(f"{path}: the earlier run used another model (predictor {models[0]}, this one is "
                         f"{current}); resume with the same --model (or start again with --overwrite)")


class NothingMapped(InputError):
    """No scan of a population run could be mapped; ``failed``: (subject, reason) of each."""

    def __init__(self, failed: list[tuple[str, str]]):
        self.failed = failed
        super().__init__("no scan could be mapped" + (f" (first error: {failed[0][1]})" if failed else ""))


@dataclass
class PopulationProgress:
    """Where a population run stands: subjects ``done`` of ``total`` (failed ones
    included), the failures so far as (subject, reason), and, in the last one, the
    ``result``."""

    done: int
    total: int
    failed: list[tuple[str, str]]
    result: PopulationResult | None = None


def iter_population(inputs: list[ScanInput], options: RunOptions | None = None,
                    checkpoint: str | Path | None = None, resume: bool = False, workers: int = 1,
                    scheduler: str | None = None, chunk: int = 8,
                    on_resume: Callable[[int], None] | None = None) -> Iterator[PopulationProgress]:
    """Per-group statistics of the inputs' importance maps on the 2 mm template grid,
    a :class:`PopulationProgress` after every ``chunk`` subjects; the last one holds
    the ``population.PopulationResult``. Stopping the iteration stops the run after
    the current chunk (the widgets' Cancel).

    ``checkpoint``: an .npz rewritten atomically after every chunk, from which
    ``resume`` continues (it must have used the same method, preprocessing and
    model: ``run_record``; and each subject it holds must be in the same group as
    now: another --group-by would mix groups); ``on_resume(n)`` is then told how
    many of the inputs it holds. Without ``resume`` an existing checkpoint is
    started again (the CLI refuses that unless --overwrite). A scan that fails,
    whatever the error, is listed in ``failed`` and the others go on.

    Raises
    ------
    InputError
        when a resumed checkpoint used other options; ``ModelError`` (an
        ``InputError``) before any scan when the model or device cannot be used,
        or the noise method's model has no noise model (``check_run_model``);
        ``NothingMapped`` (an ``InputError``) when no scan could be mapped.
    """
    options = options or RunOptions()
    check_run_model(options, need_noise_model=options.method is Method.NOISE)
    method = options.method.value
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    # What the checkpoint keeps of the options, so that a resumed mean is one run's.
    record = run_record(options, maps=True) if checkpoint is not None else {"method": method}
    groups: dict[str, RunningStats] = {}
    done: set[str] = set()
    failed: list[tuple[str, str]] = []
    if resume and checkpoint is not None and checkpoint.exists():
        with np.load(checkpoint, allow_pickle=False) as saved:
            refuse_other_options(checkpoint, {name: str(saved[name]) for name in record if name in saved}, record,
                                 earlier=EARLIER)
            done = set(saved["done"].tolist())
            if "done_group" in saved:
                _refuse_regrouped(checkpoint, dict(zip(saved["done"].tolist(), saved["done_group"].tolist())),
                                  inputs)
            for name in saved["groups"].tolist():
                groups[name] = RunningStats.from_state({k: saved[f"{name}/{k}"] for k in ("count", "mean", "m2")})
            if "failed_subject" in saved:
                failed = list(zip(saved["failed_subject"].tolist(), saved["failed_reason"].tolist()))
        if on_resume:
            on_resume(sum(item.subject in done for item in inputs))
    group_of = {item.subject: item.group or "" for item in inputs}
    todo = [item for item in inputs if item.subject not in done]
    chunks = [todo[i:i + chunk] for i in range(0, len(todo), chunk)]
    with executor(workers, scheduler) as run:
        for states, subjects, chunk_failed in run(_map_chunk_or_fail, [(c, options) for c in chunks]):
            for name, state in states.items():
                part = RunningStats.from_state(state)
                groups[name] = groups[name].merge(part) if name in groups else part
            done.update(subjects)
            failed += chunk_failed
            if checkpoint is not None:
                _save_checkpoint(checkpoint, groups, done, record, group_of, failed)
            yield PopulationProgress(len(done), len(inputs), list(failed))
    if not groups:
        raise NothingMapped(failed)
    from .inference import map_model_id
    from .model.bundle import bundled_model_dir
    from .model.card import read_card

    model = map_model_id(read_card(options.model_dir or bundled_model_dir()), method)
    yield PopulationProgress(len(done), len(inputs), list(failed), PopulationResult(groups, failed, method, model))


def population_stats(inputs: list[ScanInput], options: RunOptions | None = None,
                     checkpoint: str | Path | None = None, resume: bool = False, workers: int = 1,
                     scheduler: str | None = None, chunk: int = 8, progress: Progress | None = None,
                     on_resume: Callable[[int], None] | None = None) -> PopulationResult:
    """:func:`iter_population` run to the end; ``progress(done, total)`` after each chunk."""
    for state in iter_population(inputs, options, checkpoint, resume, workers, scheduler, chunk, on_resume):
        if state.result is not None:
            return state.result
        if progress:
            progress(state.done, state.total)
    raise AssertionError("iter_population ended without a result")  # it always yields one or raises


def _map_chunk_or_fail(items: list[ScanInput], options: RunOptions):
    """``map_chunk``, with anything that escapes it (e.g. the model failing to load
    on one worker) counted as its subjects' failure, not the run's."""
    try:
        return map_chunk(items, options)
    except Exception as err:
        return {}, [item.subject for item in items], [(item.subject, describe_error(err)) for item in items]


def _refuse_regrouped(checkpoint: Path, saved_groups: dict[str, str], inputs: list[ScanInput]) -> None:
    """``InputError`` when a subject the checkpoint holds is in another group now (another
    --group-by, or an edited table): its map is already summed into its old group's mean."""
    moved = [(item.subject, saved_groups[item.subject], item.group or "") for item in inputs
             if item.subject in saved_groups and saved_groups[item.subject] != (item.group or "")]
    if moved:
        subject, before, now = moved[0]
        raise InputError(f"{checkpoint} was made with other groups: {len(moved)} subject(s) changed group "
                         f"(e.g. {subject!r}: {before or 'no group'!r} then, {now or 'no group'!r} now; another "
                         "--group-by or an edited table); start again with --overwrite")


def _save_checkpoint(path: Path, groups: dict[str, RunningStats], done: Iterable[str],
                     record: dict[str, str], group_of: dict[str, str] | None = None,
                     failed: list[tuple[str, str]] = ()) -> None:
    done = sorted(done)
    arrays = {"done": np.array(done), "groups": np.array(sorted(groups)),
              **{name: np.array(value) for name, value in record.items()}}  # method, preprocess, model
    # The failed are done too (not retried); their reasons are kept, or a resumed run
    # would end with "0 failed" although they were never mapped.
    arrays["failed_subject"] = np.array([subject for subject, _ in failed], dtype=str)
    arrays["failed_reason"] = np.array([reason for _, reason in failed], dtype=str)
    if group_of is not None:  # each subject's group, so that a resume cannot regroup it
        arrays["done_group"] = np.array([group_of.get(subject, "") for subject in done])
    for name, stats in groups.items():
        arrays.update({f"{name}/{k}": v for k, v in stats.state().items()})
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)
