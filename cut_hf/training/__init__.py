"""Training: the runtime every objective shares (:mod:`.runtime`), checkpoints, logs, optimisers,
signals, and ``tasks/`` (CUT, SinCUT, SimCLR in the runtime). Import from the modules."""
