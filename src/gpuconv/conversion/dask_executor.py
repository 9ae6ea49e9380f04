"""Running the labelling on an existing Dask cluster (``--scheduler`` / ``--scheduler-file``).

Workers read, decode and label batches of files and send back only the small box tables; the
client writes the files in completion order, so OUT only has to exist where ``convert`` runs.
For GPU nodes start the workers with dask-cuda (``dask cuda worker`` or ``LocalCUDACluster``:
one worker per GPU, CUDA_VISIBLE_DEVICES set for each) and pass ``--backend gpu``.  Tasks are
retried when a worker is lost; a bad file fails alone, not its batch.
"""

from __future__ import annotations

import time
from pathlib import Path

from gpuconv.errors import InputError

_BACKENDS: dict[str, object] = {}  # one backend per worker process (a GPU context is costly)


def _backend(name: str):
    from gpuconv.backends import get_backend
    if name not in _BACKENDS:
        _BACKENDS[name] = get_backend(name)
    return _BACKENDS[name]


def label_batch(batch, opts, expected_hashes: dict) -> list[tuple]:
    """Runs on a worker: [(exam, in_hash, 'skip' | ExamResult | 'error: reason')]."""
    from gpuconv.conversion.manifest import input_hash
    from gpuconv.io.nrrd_read import decode_layers, read_data_blob, read_header
    from gpuconv.conversion.pipeline import label_volume
    from gpuconv.conversion.malloc_tuning import reuse_freed_memory

    reuse_freed_memory()

    results = []
    for exam, path, _split in batch:
        in_hash = None
        try:
            t0 = time.perf_counter()
            hdr = read_header(path)
            blob = Path(path).read_bytes()
            data_blob = read_data_blob(hdr, blob)
            in_hash = input_hash(blob, data_blob if data_blob is not blob else None)
            if expected_hashes.get(exam) == in_hash:
                results.append((exam, in_hash, "skip"))
                continue
            layers = decode_layers(hdr, data_blob)
            res = label_volume(hdr, layers, opts, _backend(opts.backend), exam,
                               {"read": time.perf_counter() - t0})
            results.append((exam, in_hash, res))
        except InputError as exc:
            results.append((exam, in_hash, f"error: {exc.reason}"))
        except Exception as exc:  # noqa: BLE001 - one bad file must not fail the batch
            results.append((exam, in_hash, f"error: {type(exc).__name__}: {exc}"))
    return results


def connect(scheduler: str | None = None, scheduler_file=None):
    try:
        from distributed import Client
    except ImportError:
        raise RuntimeError("--scheduler needs Dask: pip install 'gpuconv[dask]'") from None
    if scheduler_file is not None:
        return Client(scheduler_file=str(scheduler_file))
    return Client(scheduler)


def run_on_dask(jobs, opts, manifest, opt_hash, out, *, scheduler=None, scheduler_file=None,
                batch_size: int = 4):
    """Yield (exam, path, split, in_hash, skipped_record, ExamResult, error) per job."""
    from distributed import as_completed

    expected = {}
    for exam, path, split in jobs:
        rec = manifest.entries.get(exam)
        if rec and manifest.is_done(exam, rec.get("input_hash"), opt_hash[exam], out):
            expected[exam] = rec["input_hash"]
    by_exam = {exam: (path, split) for exam, path, split in jobs}
    batches = [jobs[i: i + max(1, batch_size)] for i in range(0, len(jobs), max(1, batch_size))]
    client = connect(scheduler, scheduler_file)
    try:
        futures = [client.submit(label_batch, [(e, str(p), s) for e, p, s in b], opts,
                                 {e: expected[e] for e, _, _ in b if e in expected},
                                 retries=2, pure=False) for b in batches]
        for fut, results in as_completed(futures, with_results=True, raise_errors=False):
            if fut.status == "error":
                reason = f"Dask task failed: {fut.exception()}"
                for exam, _, _ in batches[futures.index(fut)]:
                    path, split = by_exam[exam]
                    yield exam, path, split, None, None, None, reason
                continue
            for exam, in_hash, value in results:
                path, split = by_exam[exam]
                if isinstance(value, str) and value == "skip":
                    yield exam, path, split, in_hash, manifest.entries[exam], None, None
                elif isinstance(value, str):
                    yield exam, path, split, in_hash, None, None, value[len("error: "):]
                else:
                    yield exam, path, split, in_hash, None, value, None
    finally:
        client.close()
