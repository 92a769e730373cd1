"""Stopping a training run when asked, without losing it: SIGTERM, SIGUSR1 and Ctrl-C.

Cluster schedulers (SLURM, Kubernetes, spot instances) send SIGTERM (or SIGUSR1 with SLURM's
``--signal``) some time before they kill a job. :class:`StopSignals` turns the first such signal
into a request that the training loop reads after each step; the processes of a launch agree on it
in the step's all-reduce, save one checkpoint at the same step and leave with
:data:`STOPPED_EXIT_CODE`. A second Ctrl-C stops at once (``KeyboardInterrupt``).
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType, TracebackType
from typing import Any

#: The exit status of a run that stopped on a signal after writing a complete checkpoint: 75 is
#: ``EX_TEMPFAIL`` of sysexits.h ("temporary failure, try again"). A scheduler requeues on it and
#: the requeued job continues with ``--resume latest``. Distinct from 143 (128 + SIGTERM), which a
#: shell reports for a process the signal killed before it could save anything.
STOPPED_EXIT_CODE = 75

#: What a CLI prints when a second Ctrl-C stopped the run at once (exit status 130, as a shell's).
INTERRUPTED = "interrupted: stopped at once, without a checkpoint (a single Ctrl-C finishes the step and saves one)"

#: The signals that ask for a stop after the current step.
STOP_SIGNALS = ("SIGTERM", "SIGUSR1", "SIGINT")


class TrainingStopped(Exception):
    """The run stopped on a signal after saving a checkpoint at ``step``; ``str()`` is the line to print."""

    def __init__(self, step: int, signal_name: str) -> None:
        self.step, self.signal_name = step, signal_name
        super().__init__(f"stopped at step {step} by {signal_name}; resume with --resume latest")


class StopSignals:
    """While entered, the first of :data:`STOP_SIGNALS` sets :attr:`requested` (its name) instead of
    killing the process; a second SIGINT raises ``KeyboardInterrupt`` at once. The previous handlers
    come back on exit. Outside the main thread (where Python cannot install handlers) it does nothing.
    ``announce``: write a line on stderr when the first signal arrives (the main process of a launch).
    """

    def __init__(self, announce: bool = True) -> None:
        self.requested: str | None = None
        self.announce = announce
        self._previous: dict[signal.Signals, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for name in STOP_SIGNALS:
                sig = getattr(signal, name, None)
                # SIGUSR1 does not exist on Windows; a SIGINT ignored at start (a background job's `&`, nohup)
                # stays ignored, as the shell meant.
                if sig is not None and not (name == "SIGINT" and signal.getsignal(sig) == signal.SIG_IGN):
                    self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.requested is not None and name == "SIGINT":
            raise KeyboardInterrupt  # the second Ctrl-C: stop now, no checkpoint
        if self.requested is None:
            self.requested = name
            if self.announce:  # at once, so a person at the terminal sees it arrived; os.write is safe in a handler
                os.write(2, f"\n{name} received: stopping after this step (Ctrl-C again to stop at once)\n".encode())
