"""Training objectives: the losses and optimisation order of one training step, one module per method."""
