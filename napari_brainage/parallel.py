"""Ordered map over local worker processes, for per-scan CPU work (registration).

Cohort inference uses Dask (``cohort``); preparing scans for training or export
only needs the scans back in order, so a process pool is enough.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator


def ordered_map(function: Callable, jobs: list, workers: int = 1) -> Iterator:
    """``map(function, jobs)`` in order, in ``workers`` single-threaded processes when more than 1.

    ``function`` must be importable (a module-level function).
    """
    if workers <= 1 or len(jobs) < 2:
        yield from map(function, jobs)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # Spawned, not forked: the parent may already have run torch or ITK threads.
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_one_thread) as pool:
        yield from pool.map(function, jobs, chunksize=4)


def _one_thread() -> None:
    import SimpleITK as sitk
    import torch

    torch.set_num_threads(1)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
