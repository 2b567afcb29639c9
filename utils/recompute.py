"""Activation recomputation (``--recompute``): keep only block inputs, recompute the rest.

``enable_recompute(model)`` wraps, from outside the model, the residual blocks of the backbone
stages and each head module in ``torch.utils.checkpoint`` (non-reentrant): the forward keeps only
the input of each wrapped piece, and the backward runs that piece's forward again to get what it
needs. Modules and ``state_dict`` keys stay as they are (only instances' ``forward`` is replaced),
so checkpoints, DDP and weight loading do not notice.

Exactness, with the same seed the losses and weights equal those of a run without it:

- the recomputation replays the forward's random state (``preserve_rng_state``), so dropout draws
  the same masks, and the outer random stream is left where the forward left it;
- a norm layer in training mode updates its running statistics in the forward; the
  recomputation would update them a second time, so every buffer of the wrapped modules is saved
  before it and put back after it (``num_batches_tracked`` included). Outputs in training mode
  use batch statistics, so the recomputed values are those of the forward;
- InPlace-ABN overwrites its input, the output of the convolution before it, which lives inside
  the wrapped piece and is recomputed with it. (No piece starts with an in-place layer; if one
  did, InPlace-ABN copies a leaf input before writing.)

What is wrapped is found by the names models use, so new models get it without code of their own:

- a top-level ``layer<N>`` / ``stage<N>`` that is an ``nn.Sequential`` of blocks (ResNet residual
  blocks, HRNet HR modules) runs as checkpointed segments of ``SEGMENT`` consecutive blocks;
- the children of any other ``layer<N>`` / ``stage<N>`` / ``transition<N>`` container (HRNet
  transitions: called one by one) are checkpointed one by one;
- the modules named in ``model.head_names`` and ``model.aux_name`` (context and deep-supervision
  heads) are checkpointed whole.

Single layers (a 1x1 classifier, an identity) are left alone: the only tensor they keep is their
input, which the piece before already keeps.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Iterator, Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

STAGE_NAME = re.compile(r"(layer|stage|transition)\d+")
# Blocks per checkpointed segment of a stage: two keep half the block inputs of one, for one more
# block recomputed at a time in the backward (and the same recomputation time).
SEGMENT = 2


@contextlib.contextmanager
def buffers_restored(modules: Sequence[nn.Module]) -> Iterator[None]:
    """Put every buffer of ``modules`` back as it was on entry (e.g. norm running statistics)."""
    saved = [(b, b.clone()) for module in modules for b in module.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in saved:
                buffer.copy_(value)


def _contexts(modules: Sequence[nn.Module]) -> tuple[contextlib.AbstractContextManager, ...]:
    """(forward context, recomputation context) for ``checkpoint``'s ``context_fn``."""
    return contextlib.nullcontext(), buffers_restored(modules)


def _checkpointed(modules: Sequence[nn.Module], function, *args, **kwargs):
    """``function(*args, **kwargs)`` whose activations inside are recomputed in the backward."""
    # Outside training or without autograd there is no backward and nothing to save.
    if not (modules[0].training and torch.is_grad_enabled()):
        return function(*args, **kwargs)
    return checkpoint(
        function,
        *args,
        use_reentrant=False,
        preserve_rng_state=True,
        context_fn=functools.partial(_contexts, modules),
        **kwargs,
    )


def _run_blocks(blocks: Sequence[nn.Module], x):
    for block in blocks:
        x = block(x)
    return x


def _segmented_forward(stage: nn.Sequential, x):
    """``nn.Sequential.forward`` as checkpointed segments of ``SEGMENT`` blocks."""
    blocks = list(stage)
    for start in range(0, len(blocks), SEGMENT):
        segment = blocks[start : start + SEGMENT]
        x = _checkpointed(segment, functools.partial(_run_blocks, segment), x)
    return x


def _module_forward(module: nn.Module, forward, *args, **kwargs):
    return _checkpointed([module], forward, *args, **kwargs)


def _has_children(module: nn.Module) -> bool:
    return next(module.children(), None) is not None


def recompute_plan(model: nn.Module) -> list[tuple[str, nn.Module, str]]:
    """``(name, module, how)`` of what ``enable_recompute`` wraps, in model order; ``how`` is
    ``"segments"`` (a stage run as checkpointed segments) or ``"whole"``."""
    heads = {*getattr(model, "head_names", ()), getattr(model, "aux_name", None)} - {None}
    plan = []
    for name, child in model.named_children():
        if name in heads:
            if _has_children(child):
                plan.append((name, child, "whole"))
        elif STAGE_NAME.fullmatch(name):
            if type(child) is nn.Sequential and len(child) > 1:
                plan.append((name, child, "segments"))
            else:
                plan += [
                    (f"{name}.{n}", m, "whole")
                    for n, m in child.named_children()
                    if _has_children(m)
                ]
    return plan


def enable_recompute(model: nn.Module) -> list[str]:
    """Wrap what ``recompute_plan`` lists, in place; returns the wrapped names.

    Calling it again changes nothing.
    """
    names = []
    for name, module, how in recompute_plan(model):
        if "forward" not in module.__dict__:  # not wrapped yet
            if how == "segments":
                module.forward = functools.partial(_segmented_forward, module)
            else:
                module.forward = functools.partial(_module_forward, module, module.forward)
        names.append(name)
    return names
