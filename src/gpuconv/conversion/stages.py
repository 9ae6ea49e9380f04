"""A small staged pipeline on threads with bounded queues.

Each stage has its own threads and a bounded input queue, so a slow stage makes the earlier ones
wait instead of piling decoded volumes up in memory: at most ``depth`` items wait between two
stages, whatever the number of files.  The decoders (libdeflate) and the Numba kernels release
the GIL, so threads give real parallelism on the heavy parts.

A stage function that raises turns the item into a failure that skips the later stages and is
delivered to the caller like any result: one bad file never stops the others.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

_DONE = object()


@dataclass
class Stage:
    name: str
    fn: Callable[[Any, Any], Any]   # fn(item, value from the previous stage) -> value
    threads: int = 1


@dataclass
class Outcome:
    item: Any
    value: Any = None
    error: BaseException | None = None
    stage: str = ""
    cancelled: bool = False   # ``stop`` was set before its stages ran: not delivered


class Interrupts:
    """Ctrl-C while an executor waits: the first one sets ``stop`` (start nothing new, finish
    and deliver what is running), a second one raises."""

    def __init__(self, stop: threading.Event, on_stop: Callable[[], Any] | None = None):
        self.stop = stop
        self.on_stop = on_stop
        self.count = 0

    def call(self, fn: Callable, *args, **kwargs):
        while True:
            try:
                return fn(*args, **kwargs)
            except KeyboardInterrupt:
                self.count += 1
                self.stop.set()
                if self.count > 1:
                    raise
                if self.on_stop is not None:
                    self.on_stop()


def run_stages(items: Iterable, stages: list[Stage], depth: int = 4,
               stop: threading.Event | None = None) -> Iterator[Outcome]:
    """Push ``items`` through ``stages``; yield one Outcome per item in completion order.

    Setting ``stop`` (or Ctrl-C while this waits) starts no further stage of any item: items
    inside a stage finish it and are dropped, except those in the last stage, which complete;
    a second Ctrl-C raises."""
    queues = [queue.Queue(maxsize=max(1, depth)) for _ in stages]
    results: queue.Queue = queue.Queue()
    stop = stop if stop is not None else threading.Event()

    def worker(index: int, stage: Stage):
        q_in = queues[index]
        q_out = queues[index + 1] if index + 1 < len(stages) else results
        while True:
            task = q_in.get()
            if task is _DONE:
                q_in.put(_DONE)  # let the sibling threads see it too
                return
            outcome: Outcome = task
            if outcome.error is None and not outcome.cancelled and stop.is_set():
                outcome.cancelled = True
            if outcome.error is None and not outcome.cancelled:
                try:
                    outcome.value = stage.fn(outcome.item, outcome.value)
                except BaseException as exc:  # noqa: BLE001 - reported per item
                    outcome.error = exc
                    outcome.stage = stage.name
            q_out.put(outcome)

    threads_per_stage = []
    for index, stage in enumerate(stages):
        ts = [threading.Thread(target=worker, args=(index, stage), daemon=True,
                               name=f"gpuconv-{stage.name}-{n}") for n in range(stage.threads)]
        for t in ts:
            t.start()
        threads_per_stage.append(ts)

    items = list(items)

    def feed():
        for item in items:
            if stop.is_set():
                break
            queues[0].put(Outcome(item))
        queues[0].put(_DONE)

    feeder = threading.Thread(target=feed, daemon=True, name="gpuconv-feed")
    feeder.start()

    def closer():  # when a stage's threads have all finished, close the next stage's queue
        for index, ts in enumerate(threads_per_stage):
            for t in ts:
                t.join()
            if index + 1 < len(stages):
                queues[index + 1].put(_DONE)
        results.put(_DONE)

    threading.Thread(target=closer, daemon=True, name="gpuconv-close").start()
    interrupts = Interrupts(stop)
    finished = False
    try:
        while True:
            out = interrupts.call(results.get)
            if out is _DONE:
                finished = True
                return
            if not out.cancelled:
                yield out
    finally:
        if not finished:  # the consumer stopped early (an exception, or Ctrl-C): drain quietly
            stop.set()
