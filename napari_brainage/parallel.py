"""How work is spread over processes, in one place.

* ``ordered_map``: ``map`` in order over local single-threaded processes, for
  per-scan CPU work whose results are needed in order (registration while
  training or exporting; synthetic subjects). Spawned by default (the parent may
  already run torch or ITK threads); ``inherit=True`` forks, so that workers
  share what the parent built (the synthetic cohort's ageing model).
* ``executor``: a ``map_unordered`` for cohort runs, in process by default, on an
  embedded Dask ``LocalCluster`` (``local_cluster``) or on an existing
  ``dask.distributed`` scheduler.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from .errors import BrainAgeError


def ordered_map(function: Callable, jobs: list, workers: int = 1, inherit: bool = False) -> Iterator:
    """``map(function, jobs)`` in order, in ``workers`` single-threaded processes when more than 1.

    ``function`` must be importable (a module-level function). ``inherit``: fork
    (where the platform can), so workers inherit the parent's memory.
    """
    if workers <= 1 or len(jobs) < 2:
        yield from map(function, jobs)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    fork = inherit and "fork" in multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if fork else "spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_one_thread) as pool:
        yield from pool.map(function, jobs, chunksize=4)


def _one_thread() -> None:
    # One thread per process: the processes, not the libraries' threads, share the cores.
    import SimpleITK as sitk
    import torch

    torch.set_num_threads(1)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)


def local_cluster(workers: int):
    """A Dask ``LocalCluster`` of ``workers`` single-threaded processes, set up for
    3D networks.

    One thread per process: the processes, not torch's threads, share the cores.
    Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536`` so they hand
    freed memory back to the OS; that also switches off glibc's adaptive mmap
    threshold, so every activation buffer of a 3D convolution (tens of MB) is a
    fresh mapping whose pages fault in again. Measured here, it made each worker
    1.6x slower than the same process without it (2.48 vs 1.56 s per 8 maps), so
    our workers start without it. A user's own ``MALLOC_TRIM_THRESHOLD_`` is still
    inherited.
    """
    import dask
    from dask.distributed import LocalCluster

    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
        return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                            env={"OMP_NUM_THREADS": "1"})


def _malloc_trim_threshold() -> str | None:
    # Runs on the worker: a module-level function travels by reference, while
    # ``os.environ.get`` would carry a copy of *this* process's environment.
    return os.environ.get("MALLOC_TRIM_THRESHOLD_")


def _warn_about_malloc_trim(client) -> None:
    """Say so when an existing cluster's workers run with a malloc trim threshold
    (Dask's default), which slows the networks (see :func:`local_cluster`)."""
    import warnings

    trimmed = {value for value in client.run(_malloc_trim_threshold).values() if value}
    if trimmed:
        warnings.warn(f"the cluster's workers run with MALLOC_TRIM_THRESHOLD_={', '.join(sorted(trimmed))} "
                      "(Dask's default), which made the 3D networks 1.6x slower here; start them with "
                      "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_ set to null",
                      stacklevel=4)  # the run that opened the executor (past contextlib)


@contextmanager
def executor(workers: int = 1, scheduler: str | None = None):
    """A ``map_unordered(function, argument_tuples)`` iterator factory.

    In-process for one worker; otherwise Dask (a LocalCluster of ``workers``
    single-threaded processes, or the cluster at ``scheduler``).
    """
    if workers <= 1 and scheduler is None:
        yield lambda function, jobs: (function(*job) for job in jobs)
        return
    try:
        from dask.distributed import Client, as_completed
    except ImportError:
        raise BrainAgeError("--workers and --scheduler need dask.distributed: "
                           "pip install 'napari-brainage[cluster]'") from None

    cluster = None if scheduler else local_cluster(workers)
    client = connect(scheduler) if scheduler else Client(cluster)
    if scheduler:
        _warn_about_malloc_trim(client)
    else:
        # Ctrl-C reaches every process of the terminal's group: our workers leave it to
        # this process, which closes the cluster (each worker used to log its own
        # cancelled tasks and tracebacks, a screenful before our one-line message).
        client.run(_ignore_interrupts)
    try:
        def map_unordered(function, jobs) -> Iterator:
            futures = [client.submit(function, *job, pure=False) for job in jobs]
            for future in as_completed(futures):
                yield future.result()
                future.release()

        yield map_unordered
    except KeyboardInterrupt:
        # The shutdown that follows is ours, not a fault: Dask's scheduler and nannies
        # (in this process) would report each worker they stop.
        logging.getLogger("distributed").setLevel(logging.CRITICAL)
        if cluster is not None:
            client.run(_quiet_logs)  # and the workers' reports of the tasks it cancels
        raise
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def connect(scheduler: str):
    """A ``dask.distributed.Client`` of the cluster at ``scheduler``; ``BrainAgeError``
    ("cannot reach the Dask scheduler at ...") when it cannot be reached in
    ``distributed.comm.timeouts.connect`` (30 s unless configured) or its address is
    not one Dask reads: said in one line where Dask's traceback was."""
    from dask.distributed import Client

    try:
        return Client(scheduler)
    except (OSError, ValueError) as err:  # TimeoutError is an OSError; an unknown scheme a ValueError
        raise BrainAgeError(f"cannot reach the Dask scheduler at {scheduler}: {' '.join(str(err).split())}; "
                            "is it running, and is the address the one it printed?") from None


def _quiet_logs() -> None:
    """Runs on each local worker when a run is interrupted: Dask's own logging off."""
    logging.getLogger("distributed").setLevel(logging.CRITICAL)


def _ignore_interrupts() -> None:
    """Runs on each local worker (``client.run``): SIGINT is left to the main process."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
