"""Exit statuses of the training commands: one rule for how a run ends, for every task."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from cut_hf.errors import DiskFullError
from cut_hf.training.checkpoints import CheckpointError
from cut_hf.training.logs import NonFiniteLossError
from cut_hf.training.runtime import ConfigError
from cut_hf.training.signals import INTERRUPTED, STOPPED_EXIT_CODE, TrainingStopped

# Errors every training run can end with: one line, exit 1 (a task adds its own).
RUN_ERRORS: tuple[type[Exception], ...] = (CheckpointError, NonFiniteLossError, ConfigError, DiskFullError)


def training_exit_status(run: Callable[[], dict[str, Any]], known: tuple[type[Exception], ...] = ()) -> int:
    """Run a training job and turn how it ended into an exit status: 0 done; 1 with one ``error:`` line
    for a known error (``RUN_ERRORS`` + ``known``) or a failed push (the outputs are saved);
    ``STOPPED_EXIT_CODE`` when a signal stopped it after a checkpoint (the runtime printed how to resume);
    130 for a second Ctrl-C."""
    try:
        summary = run()
    except TrainingStopped:
        return STOPPED_EXIT_CODE
    except RUN_ERRORS + known as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # a second Ctrl-C
        print(INTERRUPTED, file=sys.stderr)
        return 130
    if summary.get("push_error"):  # the models are saved; the push is what failed
        print(f"error: {summary['push_error']}", file=sys.stderr)
        return 1
    return 0
