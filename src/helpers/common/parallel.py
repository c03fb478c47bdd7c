"""A process pool for the data stages: phantom synthesis and image decoding use every core.

Results come back in input order and every item is a pure function of its arguments, so the output is the
same whatever the number of workers. Workers are started with ``spawn`` (never ``fork``: the parent may hold
TensorFlow or JAX threads), so small jobs run in-process, where the start-up would cost more than it saves.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from typing import Callable, Iterable, Sequence

#: Environment variable capping the number of worker processes (e.g. on a shared machine).
WORKERS_ENV = "STUDY_WORKERS"
#: Fewer items than this run in the calling process.
MIN_PARALLEL_ITEMS = 256


def worker_count(workers: int | None = None) -> int:
    """Worker processes to use: ``workers`` if given, else ``$STUDY_WORKERS``, else the usable CPU cores."""
    if workers is None:
        env = os.environ.get(WORKERS_ENV, "")
        if env.strip():
            try:
                workers = int(env)
            except ValueError:
                raise ValueError(f"${WORKERS_ENV} must be a positive int, got {env!r}") from None
            if workers < 1:
                raise ValueError(f"${WORKERS_ENV} must be a positive int, got {env!r}")
        else:
            try:
                workers = len(os.sched_getaffinity(0))
            except AttributeError:  # not on Linux
                workers = os.cpu_count() or 1
    if isinstance(workers, bool) or int(workers) < 1:
        raise ValueError(f"workers must be a positive int, got {workers!r}")
    return int(workers)


def _one_thread_each() -> None:
    """In a worker process: one OpenCV and BLAS thread, so N workers use N cores rather than N x cores threads."""
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = "1"
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:  # pragma: no cover - OpenCV is a dependency
        pass


def _run_chunk(fn: Callable, chunk: Sequence) -> list:
    return [fn(*args) for args in chunk]


def io_thread_count() -> int:
    """Threads for reading and decoding files: ``$STUDY_WORKERS`` if set, else the cores + 4 (at most 32), so that
    reads from a slow disk or a mounted drive overlap the decoding."""
    if os.environ.get(WORKERS_ENV, "").strip():
        return worker_count()
    return min(32, worker_count() + 4)


def parallel_map(
    fn: Callable, items: Iterable[tuple], workers: int | None = None, progress=None, threads: bool = False
) -> list:
    """``[fn(*args) for args in items]`` on a process pool (or threads), in input order; ``fn`` must be importable.

    ``threads=True`` suits work that releases the GIL (OpenCV decoding and resizing) and starts no process.
    ``progress``, if given, is called with the number of items finished after each chunk. A process pool needs
    the calling script to guard its entry point with ``if __name__ == "__main__":`` (notebooks need nothing); its
    workers start by re-running the script's top level, so a script that imports Keras there pays that import in every
    worker (seconds each): keep such imports out of the workers' way (``if __name__ != "__mp_main__":``).
    """
    items = list(items)
    workers = min(worker_count(workers), max(1, len(items)))
    if workers == 1 or (len(items) < MIN_PARALLEL_ITEMS and not threads):
        out = []
        for args in items:
            out.append(fn(*args))
            if progress is not None:
                progress(1)
        return out
    size = max(1, min(16, len(items) // (workers * 4)))  # small chunks: no long tail on many cores
    chunks = [items[i : i + size] for i in range(0, len(items), size)]
    results: list = [None] * len(chunks)
    pool_type = ThreadPoolExecutor if threads else ProcessPoolExecutor
    options = {} if threads else {"mp_context": multiprocessing.get_context("spawn"), "initializer": _one_thread_each}
    failed = False
    with pool_type(max_workers=workers, **options) as pool:
        futures = {pool.submit(_run_chunk, fn, chunk): i for i, chunk in enumerate(chunks)}
        for future in as_completed(futures):
            i = futures[future]
            if future.exception() is not None:  # stop early: chunks not yet started are dropped
                failed = True
                for pending in futures:
                    pending.cancel()
                break
            results[i] = future.result()
            if progress is not None:
                progress(len(chunks[i]))
    if failed:  # chunks start in input order, so every chunk before a started one ran: raise the first failure
        errors = {i: f.exception() for f, i in futures.items() if not f.cancelled() and f.exception() is not None}
        raise errors[min(errors)]
    return [value for chunk in results for value in chunk]


def each_index(fn: Callable[[int], object], n: int, workers: int | None = None) -> list:
    """``[fn(i) for i in range(n)]`` on a thread pool (:func:`parallel_map`), in index order.

    For OpenCV work (which releases the GIL) that writes each image into its own slot of a preallocated array:
    the result is the same whatever the number of threads.
    """
    return parallel_map(fn, [(i,) for i in range(n)], workers, threads=True)


@contextlib.contextmanager
def progress_updates(total: int, enabled: bool, desc: str):
    """A progress bar's ``update`` callable for :func:`parallel_map` (None when disabled), closed on exit."""
    if not enabled:
        yield None
        return
    from helpers.common.progress import tqdm

    bar = tqdm(total=total, desc=desc, unit="img")
    try:
        yield bar.update
    finally:
        bar.close()
