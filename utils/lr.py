"""Learning-rate schedule of OCNet: polynomial ("poly") decay, as in DeepLab and the original."""

from __future__ import annotations


def poly_lr(base_lr: float, iteration: int, max_iter: int, power: float = 0.9) -> float:
    """``base_lr * (1 - iteration / max_iter) ** power`` for the step that starts at ``iteration``.

    The original's ``lr_poly``: step 0 uses ``base_lr`` and the last step a small positive rate.
    """
    return base_lr * (1.0 - float(iteration) / max_iter) ** power


def set_lr(optimizer, lr: float) -> None:
    """Give every parameter group the same rate (train.py uses one group, like the original)."""
    for group in optimizer.param_groups:
        group["lr"] = lr
