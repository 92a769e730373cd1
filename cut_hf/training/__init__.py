"""The training runtime every objective shares (see :mod:`cut_hf.training.runtime`), its checkpoints and logs."""

from cut_hf.training.checkpoints import COMPLETE_MARKER, TRAINER_STATE, CheckpointError, CheckpointManager
from cut_hf.training.logs import (
    CheckpointUploader,
    NonFiniteLossError,
    PushError,
    check_finite,
    image_grid,
    log_images,
    output_folders,
    push_folders_to_hub,
    save_image,
    tracker_config,
    weights_digest,
)
from cut_hf.training.runtime import (
    MIXED_PRECISION_HELP,
    ConfigError,
    RunConfig,
    Trainer,
    TrainingTask,
    add_runtime_flags,
    launcher_resolved,
    setup_accelerator,
)
from cut_hf.training.signals import INTERRUPTED, STOPPED_EXIT_CODE, StopSignals, TrainingStopped

__all__ = ["COMPLETE_MARKER", "MIXED_PRECISION_HELP", "TRAINER_STATE", "CheckpointError", "CheckpointManager",
           "CheckpointUploader", "NonFiniteLossError", "PushError", "launcher_resolved", "output_folders",
           "check_finite", "image_grid", "log_images", "push_folders_to_hub", "save_image", "tracker_config",
           "weights_digest", "ConfigError", "RunConfig", "Trainer", "TrainingTask", "add_runtime_flags",
           "setup_accelerator", "INTERRUPTED", "STOPPED_EXIT_CODE", "StopSignals", "TrainingStopped"]
