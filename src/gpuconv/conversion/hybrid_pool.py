"""CPU worker processes feeding one labeller process (``convert --pool hybrid``; issue 18).

On a GPU server the labelling is the only part a GPU speeds up: reading, gzip decoding and
writing small files stay on the host.  With ``--pool process`` every worker makes its own CUDA
context (slow); with threads the GIL limits the host work.  Here:

- CPU worker processes (forkserver, as in ``process_pool.py``) run the host half of the exam
  unit of ``exam_unit.py`` for their batch: ``read_step`` (read, hash, skip if unchanged,
  decode), ``place_step``, then, once the labeller has answered, ``results_step`` (boxes,
  polygons, 3D instance rows) and ``write_step``; each exam's ``ExamOutcome`` goes to the parent.
- ONE labeller process owns the backend (``opts.backend``: later the GPU, in the tests the CPU
  backend) and runs ``components_step``.  A worker hands it a decoded volume through shared
  memory (one ``multiprocessing.shared_memory`` block per volume: the worker creates it and
  copies the placed layers in, the labeller attaches; no volume is pickled) and gets back only
  the small ``SliceComponents`` / ``Instances3D`` tables.  Volumes queued together are labelled
  as one batch (:meth:`Labeller.label_batch`, the seam for a GPU that labels several volumes per
  launch; with the CPU it loops).
- Memory is bounded: each worker has at most ``IN_FLIGHT`` (2) volumes handed over, in blocks
  named ``gpuconv-<run>-<worker>-<slot>``.  The worker unlinks its block as soon as the answer
  is in (or the exam failed); the parent unlinks the blocks of a worker that died and, at the
  end of the run, every name the run could have used; the resource tracker is the last
  backstop when the whole process tree is killed.  Nothing is left in /dev/shm.

Failures: a bad file fails alone with its one line (``failure_reason``).  A worker process that
dies fails the exams of its batch not yet delivered ("worker process died ..."); the other
workers take the remaining batches.  The labeller process dying stops the run: the exams
handed to it fail with one line each, no new exam starts, and the run ends with one line
(``InputError``: the CLI prints it and exits 2) saying that the same command resumes; there is
no second labeller (a device that crashed once would likely crash again, and a silent fallback
would hide it).  Ctrl-C, ``stop`` and the death of the converting process behave as with
``--pool process`` (``_worker_init``: workers ignore SIGINT and exit with their parent); after
``stop`` the workers finish the exams already handed to the labeller, start no other.

``--pool auto`` never picks this pool: it has only been tested with the CPU labeller and is
unmeasured on a GPU.
"""

from __future__ import annotations

import itertools
import os
import queue
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing import shared_memory
from multiprocessing.connection import wait as wait_ready
from typing import Iterator

import numpy as np

from gpuconv.conversion.exam_unit import (ExamJob, ExamOutcome, components_step, failure_reason,
                                          place_step, read_step, results_step, worker_backend,
                                          write_step)
from gpuconv.conversion.process_pool import _context, _main_module_hidden, _worker_init
from gpuconv.conversion.stages import Interrupts
from gpuconv.errors import InputError

IN_FLIGHT = 2                    # volumes one worker may have handed to the labeller at a time
SHM_PREFIX = "gpuconv-"
LABELLER_GONE = "the labeller process died"
_RUNS = itertools.count(1)


def shm_name(run: str, worker: int, slot: int) -> str:
    return f"{SHM_PREFIX}{run}-{worker}-{slot}"


def _unlink(name: str) -> None:
    """Remove a block by name if it still exists (attaching then unlinking also keeps the
    resource tracker's books straight)."""
    try:
        shm = shared_memory.SharedMemory(name=name)
    except (FileNotFoundError, OSError):
        return
    try:
        shm.unlink()
    except FileNotFoundError:
        pass
    shm.close()


def _exit_text(code) -> str:
    if code is None:
        return "exit status unknown"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


# --- the labeller process ---------------------------------------------------------------------

class Labeller:
    """Owns the backend in the labeller process.  :meth:`label_batch` gets every volume queued
    at that moment (up to ``IN_FLIGHT`` per worker): the seam where a GPU labeller uploads
    several volumes and labels them per launch.  Here (CPU backend, today's GPU backend) it
    labels them one by one with the exam unit's ``components_step``."""

    def __init__(self, backend, opts):
        self.backend = backend
        self.opts = opts

    def label_batch(self, volumes: list) -> Iterator[tuple]:
        """Yields one answer per volume, in order, each sent to its worker at once:
        ('ok', SliceComponents, Instances3D | None, timings) or ('failed', one-line reason).
        A batched GPU labeller would label them all, then yield."""
        for layers in volumes:
            timings: dict = {}
            try:
                comp, inst = components_step(layers, self.opts, self.backend, timings)
                yield ("ok", comp, inst, timings)
            except Exception as exc:  # noqa: BLE001 - this exam fails alone
                yield ("failed", failure_reason(exc, "label"))


class _Sender:
    """Replies to one worker from a thread of their own, so a worker that is busy writing (or
    dead) never holds up the labelling of the others."""

    def __init__(self, conn):
        self.conn = conn
        self.q: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._run, daemon=True, name="gpuconv-reply")
        self.thread.start()

    def _run(self):
        while True:
            msg = self.q.get()
            if msg is None:
                return
            try:
                self.conn.send(msg)
            except (OSError, EOFError):  # the worker is gone: nothing to answer
                return

    def close(self):
        self.q.put(None)


def _labeller_main(parent_pid: int, conns: list, opts, status) -> None:
    _worker_init(parent_pid)
    try:
        _label_for_workers(conns, opts)
    except BaseException as exc:  # noqa: BLE001 - told to the parent in one line, no traceback
        try:
            status.send(failure_reason(exc))
        finally:
            os._exit(3)


def _label_for_workers(conns: list, opts) -> None:
    from gpuconv.conversion.malloc_tuning import reuse_freed_memory
    reuse_freed_memory()
    labeller = Labeller(worker_backend(opts.backend), opts)
    senders = {c: _Sender(c) for c in conns}
    live = list(conns)
    while live:
        requests = []
        for c in wait_ready(live):
            try:
                while c.poll():
                    requests.append((c, c.recv()))
            except (EOFError, OSError):  # that worker has ended
                live.remove(c)
                senders[c].close()
        if requests:
            _serve(labeller, requests, senders)
    for s in senders.values():
        s.close()
        s.thread.join(timeout=5)


def _serve(labeller: Labeller, requests: list, senders: dict) -> None:
    attached, volumes, asked = [], [], []
    for conn, (token, name, shape, dtype, order) in requests:
        try:
            shm = shared_memory.SharedMemory(name=name)
            vol = np.ndarray(shape, np.dtype(dtype), buffer=shm.buf, order=order)
        except Exception as exc:  # noqa: BLE001 - that exam fails alone
            senders[conn].q.put((token, ("failed", f"cannot attach the volume ({exc})")))
            continue
        attached.append(shm)
        volumes.append(vol)
        asked.append((conn, token))
    vol = None
    if volumes:
        for (conn, token), answer in zip(asked, labeller.label_batch(volumes)):
            senders[conn].q.put((token, answer))
    volumes.clear()
    for shm in attached:
        try:
            shm.close()
        except BufferError:  # a backend kept a view: the mapping goes with it
            pass


# --- the worker processes ---------------------------------------------------------------------

def _order(a: np.ndarray) -> str:
    """The block keeps the decoded layout (the kernels see the same strides as elsewhere)."""
    return "F" if a.flags.f_contiguous and not a.flags.c_contiguous else "C"


@dataclass
class _Handed:
    """An exam whose volume is with the labeller."""

    job: ExamJob
    token: int
    in_hash: str
    header: object
    layers: np.ndarray           # a view of the block
    shm: shared_memory.SharedMemory
    slot: int
    timings: dict = field(default_factory=dict)


class _Worker:
    def __init__(self, index: int, run: str, tasks, labeller, opts):
        self.index, self.run, self.opts = index, run, opts
        self.tasks, self.labeller = tasks, labeller    # pipes to the parent, to the labeller
        self.tokens = itertools.count(1)
        self.free = list(range(IN_FLIGHT))
        self.labeller_gone = False
        self.exit_asked = False
        self.answers: dict = {}

    def serve(self) -> None:
        while True:
            try:
                msg = self.tasks.recv()
            except (EOFError, OSError):
                return
            if msg is None:
                return
            if msg == "stop":
                continue
            batch, writer, skip = msg
            self.convert_batch(batch, writer, skip)
            self.tasks.send(("done",))
            if self.exit_asked:
                return

    def _stop_asked(self) -> bool:
        stopped = False
        while self.tasks.poll():
            msg = self.tasks.recv()
            self.exit_asked = self.exit_asked or msg is None
            stopped = stopped or msg == "stop" or msg is None
        return stopped

    def convert_batch(self, batch: list[ExamJob], writer, skip: dict) -> None:
        handed: deque[_Handed] = deque()
        stopped = False
        for job in batch:
            if self.labeller_gone or stopped or (stopped := self._stop_asked()):
                break
            while len(handed) >= IN_FLIGHT:
                self._send(self.finish(handed.popleft(), writer))
            if self.labeller_gone:     # found out just now: this exam is not started
                break
            got = self.hand_over(job, skip.get(job.exam))
            if isinstance(got, _Handed):
                handed.append(got)
            else:
                self._send(got)
        while handed:
            self._send(self.finish(handed.popleft(), writer))

    def _send(self, outcome: ExamOutcome) -> None:
        if outcome.result is not None:
            outcome.result.stripped()
        self.tasks.send(("outcome", outcome))

    def hand_over(self, job: ExamJob, skip_hash):
        """read -> hash -> skip? -> decode -> place, then the layers into a block and a request
        to the labeller; an ExamOutcome when the exam ends here."""
        in_hash, during = None, "read"
        try:
            read = read_step(job, None, skip_hash)
            in_hash = read.in_hash
            if read.skipped:
                return ExamOutcome(job, "skipped", in_hash)
            during = "label"
            t0 = time.perf_counter()
            hdr, layers = place_step(job, read, self.opts)
            read.layers = None
            slot = self.free.pop()
            try:
                shm, view = self._block(slot, layers)
            except BaseException:
                self.free.append(slot)
                raise
            del layers
            read.timings["label"] = time.perf_counter() - t0
            token = next(self.tokens)
            h = _Handed(job, token, in_hash, hdr, view, shm, slot, read.timings)
            try:
                self.labeller.send((token, shm.name, view.shape, view.dtype.str, _order(view)))
            except (OSError, EOFError):
                self.labeller_gone = True
                self._release(h)
                return ExamOutcome(job, "failed", in_hash, reason=LABELLER_GONE)
            return h
        except Exception as exc:  # noqa: BLE001 - the per-exam boundary
            return ExamOutcome(job, "failed", in_hash, reason=failure_reason(exc, during))

    def _block(self, slot: int, layers: np.ndarray):
        name = shm_name(self.run, self.index, slot)
        size = max(1, layers.nbytes)
        try:
            shm = shared_memory.SharedMemory(name=name, create=True, size=size)
        except FileExistsError:  # left by a killed run whose pid this run now has
            _unlink(name)
            shm = shared_memory.SharedMemory(name=name, create=True, size=size)
        try:
            view = np.ndarray(layers.shape, layers.dtype, buffer=shm.buf, order=_order(layers))
            view[...] = layers
        except BaseException:
            shm.close()
            shm.unlink()
            raise
        return shm, view

    def _release(self, h: _Handed) -> None:
        h.layers = None
        try:
            h.shm.close()
        except BufferError:  # a table still views the block: the mapping goes when it does
            pass
        try:
            h.shm.unlink()
        except FileNotFoundError:
            pass
        self.free.append(h.slot)

    def _answer(self, token: int):
        while token not in self.answers:
            got, answer = self.labeller.recv()
            self.answers[got] = answer
        return self.answers.pop(token)

    def finish(self, h: _Handed, writer) -> ExamOutcome:
        """The labeller's answer -> results -> files."""
        job, during = h.job, "label"
        try:
            if self.labeller_gone:
                return ExamOutcome(job, "failed", h.in_hash, reason=LABELLER_GONE)
            try:
                answer = self._answer(h.token)
            except (EOFError, OSError):
                self.labeller_gone = True
                return ExamOutcome(job, "failed", h.in_hash, reason=LABELLER_GONE)
            if answer[0] != "ok":
                return ExamOutcome(job, "failed", h.in_hash, reason=answer[1])
            _, comp, inst, lab_timings = answer
            timings = h.timings
            for k, v in lab_timings.items():
                timings[k] = timings.get(k, 0.0) + v
            res = results_step(job, h.header, h.layers, comp, inst, self.opts, timings)
            during = "write"
            files = write_step(job, res, writer)
            return ExamOutcome(job, "ok", h.in_hash, res, files)
        except Exception as exc:  # noqa: BLE001 - the per-exam boundary
            return ExamOutcome(job, "failed", h.in_hash, reason=failure_reason(exc, during))
        finally:
            self._release(h)


def _worker_main(parent_pid: int, index: int, run: str, tasks, labeller, opts) -> None:
    _worker_init(parent_pid)
    from gpuconv.conversion.malloc_tuning import reuse_freed_memory
    reuse_freed_memory()
    _Worker(index, run, tasks, labeller, opts).serve()


# --- the parent -------------------------------------------------------------------------------

def run_on_hybrid(jobs: list[ExamJob], skip_hash: dict, opts, writer, workers: int,
                  batch_size: int | None = None,
                  stop: threading.Event | None = None) -> Iterator[ExamOutcome]:
    """One ExamOutcome per job, in completion order.  After ``stop`` is set (or Ctrl-C while
    this waits) no new exam starts; those already with the labeller finish and are delivered.
    Raises InputError after the last outcome when the labeller process died."""
    stop = stop if stop is not None else threading.Event()
    if not jobs:
        return
    if batch_size is None:  # a few batches per worker, as process_pool does, but up to
        # 2 x IN_FLIGHT exams while every worker still gets one (a worker overlaps its exams
        # only within a batch)
        batch_size = max(1, min(2 * IN_FLIGHT, len(jobs) // workers),
                         min(8, len(jobs) // (4 * workers)))
    batches = deque(jobs[i: i + batch_size] for i in range(0, len(jobs), batch_size))
    n = max(1, min(workers, len(batches)))
    run = f"{os.getpid()}x{next(_RUNS)}"
    names = [[shm_name(run, w, s) for s in range(IN_FLIGHT)] for w in range(n)]
    ctx = _context()
    parent_pid = os.getpid()
    tasks, worker_ends, lab_worker, lab_ends = [], [], [], []
    for _ in range(n):
        a, b = ctx.Pipe()
        tasks.append(a)
        worker_ends.append(b)
        c, d = ctx.Pipe()
        lab_worker.append(c)
        lab_ends.append(d)
    procs: list = []
    status, status_end = ctx.Pipe(duplex=False)    # the labeller's last word, if it fails
    lab = ctx.Process(target=_labeller_main, args=(parent_pid, lab_ends, opts, status_end),
                      daemon=True, name="gpuconv-labeller")
    hard = False
    try:
        with _main_module_hidden():
            lab.start()
            for w in range(n):
                p = ctx.Process(target=_worker_main, daemon=True, name=f"gpuconv-hybrid-{w}",
                                args=(parent_pid, w, run, worker_ends[w], lab_worker[w], opts))
                p.start()
                procs.append(p)
        for conn in worker_ends + lab_worker + lab_ends + [status_end]:  # only the children
            conn.close()                  # hold these now: a death is an EOF on the other side
        yield from _supervise(jobs, batches, skip_hash, writer, stop, tasks, procs,
                              _LabellerWatch(lab, status), names, n)
    except BaseException as exc:
        hard = isinstance(exc, KeyboardInterrupt)   # a second Ctrl-C: stop at once
        raise
    finally:
        _shut_down(tasks, procs, lab, names, hard)
        status.close()


class _LabellerWatch:
    """The labeller process as the parent sees it: alive, or gone and why (once)."""

    def __init__(self, proc, status):
        self.proc, self.status = proc, status
        self.sentinel = proc.sentinel
        self.gone: str | None = None

    def died(self) -> str:
        if self.gone is None:
            self.proc.join(timeout=2)
            said = None
            try:
                if self.status.poll():
                    said = self.status.recv()
            except (EOFError, OSError):
                pass
            self.gone = _exit_text(self.proc.exitcode) + (f": {said}" if said else "")
        return self.gone


def _supervise(jobs, batches: deque, skip_hash: dict, writer, stop: threading.Event, tasks,
               procs, lab: "_LabellerWatch", names: list[list[str]],
               n: int) -> Iterator[ExamOutcome]:
    assigned: dict[int, dict] = {}      # worker -> {exam: job} of its batch not yet delivered
    alive = set(range(n))
    told = False
    counts = {"handed": 0, "converted": 0}   # failed with the labeller; ok or skipped

    def send_next(w: int) -> None:
        if stop.is_set() or lab.gone or not batches or w not in alive:
            return
        b = batches.popleft()
        exams = {j.exam for j in b}
        try:
            tasks[w].send((b, writer.for_exams(exams),
                           {e: skip_hash[e] for e in exams if e in skip_hash}))
        except OSError:     # it died while idle: another idle one takes the batch
            batches.appendleft(b)
            alive.discard(w)
            for v in list(alive):
                if v not in assigned:
                    send_next(v)
                    break
            return
        assigned[w] = {j.exam: j for j in b}

    def tell_stop() -> None:
        for w in alive:
            try:
                tasks[w].send("stop")
            except OSError:
                pass

    for w in range(n):
        send_next(w)
    interrupts = Interrupts(stop)
    while assigned:
        if stop.is_set() and not told:
            told = True
            tell_stop()
        waiting = {tasks[w]: w for w in assigned}
        dying = {procs[w].sentinel: w for w in assigned}
        watch = list(waiting) + list(dying) + ([] if lab.gone else [lab.sentinel])
        ready = interrupts.call(wait_ready, watch, timeout=1.0)
        if lab.sentinel in ready:
            lab.died()
        gone = set()          # its pipe at EOF or its sentinel set: the worker has ended
        for r in ready:
            if r in waiting and (yield from _messages(waiting[r], tasks, assigned, lab, counts,
                                                      send_next)):
                gone.add(waiting[r])
        gone |= {dying[r] for r in ready if r in dying}
        for w in sorted(gone):
            if w not in assigned:
                continue
            yield from _messages(w, tasks, assigned, lab, counts, send_next)
            if w not in assigned:          # it said "done" before it went
                continue
            procs[w].join(timeout=1)
            alive.discard(w)
            reason = f"worker process died ({_exit_text(procs[w].exitcode)})"
            for job in assigned.pop(w).values():
                yield ExamOutcome(job, "failed", reason=reason)
            for name in names[w]:          # the blocks it had: nobody else unlinks them
                _unlink(name)
            for v in list(alive):          # an idle worker takes a batch left over
                if v not in assigned:
                    send_next(v)
    while batches and not stop.is_set() and not lab.gone:   # every worker died
        for job in batches.popleft():
            yield ExamOutcome(job, "failed", reason="no worker process left (every one died)")
    if lab.gone:
        left = len(jobs) - counts["converted"]
        raise InputError(f"{LABELLER_GONE} ({lab.gone}); the run stopped: "
                         f"{counts['handed']} exam(s) handed to it failed, {left} of "
                         f"{len(jobs)} not converted; run the same command again to resume")


def _messages(w: int, tasks, assigned: dict, lab: "_LabellerWatch", counts: dict,
              send_next):
    """Everything worker ``w`` has sent so far; returns True when its pipe is at EOF."""
    conn = tasks[w]
    while w in assigned:
        try:
            if not conn.poll():
                return False
            msg = conn.recv()
        except (EOFError, OSError):    # it is gone: the caller fails what it had
            return True
        if msg[0] == "done":           # exams of its batch not delivered were not started
            del assigned[w]
            send_next(w)
            return False
        outcome: ExamOutcome = msg[1]
        assigned[w].pop(outcome.job.exam, None)
        if outcome.status != "failed":
            counts["converted"] += 1
        if outcome.reason == LABELLER_GONE:
            counts["handed"] += 1
            outcome.reason = f"{LABELLER_GONE} ({lab.died()})"
        yield outcome
    return False


def _pid_gone(p) -> bool:
    """The process has ended.  Its sentinel (the forkserver's report) now and then comes late
    or not at all (seen once in ~50 runs: every worker reaped, ``is_alive()`` still True), so
    a pid that no longer exists counts too."""
    if not p.is_alive():
        return True
    try:
        os.kill(p.pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        pass
    return False


def _shut_down(tasks, procs, lab, names: list[list[str]], hard: bool) -> None:
    """Workers end after the exams they have with the labeller (at once after a second Ctrl-C);
    the labeller ends when every worker has; then no block of this run is left."""
    for conn in tasks:
        for msg in ("stop", None):
            try:
                conn.send(msg)
            except OSError:
                break
    deadline = time.monotonic() + (0 if hard else 60)
    open_conns = list(tasks)
    while not hard and time.monotonic() < deadline and not all(_pid_gone(p) for p in procs):
        # what they still send (outcomes nobody will record) is read, so no send blocks them
        watch = open_conns + [p.sentinel for p in procs if p.is_alive()]
        for r in wait_ready(watch, timeout=min(0.2, max(0.0, deadline - time.monotonic()))):
            if r in open_conns:
                try:
                    r.recv()
                except (EOFError, OSError):
                    open_conns.remove(r)
    for p in procs + ([lab] if lab.pid is not None else []):
        if p is lab and not hard:      # it ends once every worker has
            until = time.monotonic() + 10
            while time.monotonic() < until and not _pid_gone(lab):
                lab.join(timeout=0.2)
        if not _pid_gone(p):
            p.terminate()
            p.join(timeout=5)
    for conn in tasks:
        conn.close()
    for name in itertools.chain.from_iterable(names):
        _unlink(name)
