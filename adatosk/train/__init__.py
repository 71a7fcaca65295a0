"""Training: the ``adatosk train`` command (``engine``), the optimiser and schedule (``optim``), mixup/cutmix for
video (``mixup``), process groups and AMP (``distributed``), seeds and resumable RNG states (``rng``)."""
