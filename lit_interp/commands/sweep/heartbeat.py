"""The worker's heartbeat: a thread recording each running trial's heartbeat in the storage, and stopping a child
whose trial another worker took over meanwhile."""

from __future__ import annotations

import sys
import threading
import warnings
from typing import Any

from lit_interp.optuna_storage import open_storage


class Heartbeats:
    """Records a heartbeat for each of this worker's trials every `interval` seconds from its own daemon thread.

    Nothing the worker's loop waits on (a child's long step, another trial's objective, the storage's lock) delays a
    heartbeat, and the thread dies with the worker, so a dead worker's trials go stale after the grace period. A trial
    that another worker failed meanwhile (this worker's heartbeats came too late: a stalled machine, a lost network)
    is `lost`: its child is killed at once, so two live runs of one trial never go on for longer than a beat.
    With a storage without heartbeats (the journal) nothing runs.
    """

    def __init__(self, url: str, interval: int | None):
        self.url = url
        self.interval = interval
        self.lost: set[int] = set()
        self._trials: dict[int, tuple[int, Any]] = {}  # trial number -> (its storage id, its child or None)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._storage = None
        self._complained = False

    def start(self) -> None:
        if self.interval is not None:
            self._storage = open_storage(self.url)  # its own connections: the worker's loop never blocks it
            self._thread = threading.Thread(target=self._run, name="lit_interp heartbeat", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def add(self, number: int, trial_id: int, child: Any = None) -> None:
        with self._lock:
            self._trials[number] = (trial_id, child)

    def remove(self, number: int) -> None:
        """Before the trial is told: a finished trial is not a lost one."""
        with self._lock:
            self._trials.pop(number, None)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.beat()

    def beat(self) -> None:
        import optuna

        with self._lock:
            trials = list(self._trials.items())
        for number, (trial_id, child) in trials:
            if child is not None and child.poll() is not None:
                continue  # ended: the worker's loop tells it
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    self._storage.record_heartbeat(trial_id)
                state = self._storage.get_trial(trial_id).state
            except Exception as error:  # a storage out of reach: try again next beat, say so once
                if not self._complained:
                    self._complained = True
                    print(
                        f"heartbeat of trial {number} not recorded ({type(error).__name__}: {error})", file=sys.stderr
                    )
                continue
            with self._lock:
                if state != optuna.trial.TrialState.RUNNING and number in self._trials:
                    self.lost.add(number)
                    if child is not None:
                        child.kill()
