"""In-place activated batch normalisation (Rota Bulo et al., CVPR 2018) on plain torch ops.

BatchNorm + activation normally keeps two activation-sized tensors for the backward (the input of
the norm and the input of the activation). Here the forward overwrites its input with the output
and keeps only that output: the backward recovers the normalised input by inverting the
activation and the affine transform (paper, Sec. 3.2). The output is what the next convolution
saves anyway, so a conv + InPlaceABN(leaky_relu) block stores one tensor instead of three. With
``activation="identity"`` and a separate ReLU after it (the ResNet backbone, as in the original)
the ReLU keeps its own output, so there the saving is nil.

Caveats of any in-place op: the input tensor is overwritten, so it must not be needed elsewhere
(feed it a convolution's output, as every use in OCNet does); autograd raises an error at
backward time if an earlier op saved the overwritten tensor; and full backward hooks
(``register_full_backward_hook``) on the module are refused, as for ``nn.ReLU(inplace=True)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from utils.distributed import all_reduce_sum, is_dist

from .abn import ABN


def _per_channel(t: torch.Tensor, ndim: int) -> torch.Tensor:
    """Shape a [C] tensor to broadcast over [N, C, *spatial]."""
    return t.view(1, -1, *([1] * (ndim - 2)))


def _stats_dtype(x: torch.Tensor) -> torch.dtype:
    """fp16/bf16 inputs (autocast) get fp32 statistics; fp32/fp64 keep their own precision."""
    return x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32


def _batch_stats(x: torch.Tensor, sync: bool) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Per-channel mean, biased variance and count of the batch, over all ranks when ``sync``.

    Sums and counts are reduced first and the centred sum of squares second (not E[x^2] - E[x]^2,
    which cancels badly), so unequal per-rank batch sizes are exact. (``torch.var_mean`` over
    the batch and spatial dims is ~20x slower than this on CPU.)
    """
    dims = [d for d in range(x.dim()) if d != 1]
    sums, count = x.sum(dims), float(x.numel() // x.shape[1])
    sync = sync and is_dist()
    if sync:  # one reduction for sums and count; the count leaves the device only here
        packed = all_reduce_sum(torch.cat([sums.double(), sums.new_tensor([count]).double()]))
        sums, count = packed[:-1], packed[-1].item()
    if count < 2:
        raise ValueError(f"Expected more than 1 value per channel when training, got {count:g}")
    mean = (sums / count).to(x.dtype)
    centred = (x - _per_channel(mean, x.dim())).square_().sum(dims)
    if sync:
        centred = all_reduce_sum(centred.double())
    return mean, (centred / count).to(x.dtype), count


def _guarded(weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Weight with |w| >= eps, keeping its sign (0 counts as positive).

    The backward divides by the weight (paper, Sec. 3.2 uses |w| + eps). Clamping instead of
    adding leaves every weight with |w| >= eps untouched, so the result equals BatchNorm2d
    exactly; the forward uses the same guarded weight, so gradients stay exact either way.
    """
    magnitude = weight.abs().clamp_min(eps)
    return torch.where(weight < 0, -magnitude, magnitude)


class _InPlaceABNFunction(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx,
        x: torch.Tensor,
        weight: torch.Tensor | None,
        bias: torch.Tensor | None,
        running_mean: torch.Tensor,
        running_var: torch.Tensor,
        training: bool,
        average_factor: float,
        eps: float,
        activation: str,
        slope: float,
        sync: bool,
    ) -> torch.Tensor:
        dtype = _stats_dtype(x)
        # Low-precision inputs are normalised in an fp32 copy and rounded once when written back.
        xf = x if x.dtype == dtype else x.to(dtype)
        channels = x.shape[1]
        w = torch.ones(channels, dtype=dtype, device=x.device) if weight is None else weight
        b = torch.zeros(channels, dtype=dtype, device=x.device) if bias is None else bias
        w = _guarded(w.to(dtype), eps)
        b = b.to(dtype)

        if training:
            mean, var, count = _batch_stats(xf, sync)
            unbiased = var * (count / (count - 1))
            running_mean.mul_(1 - average_factor).add_(
                mean.to(running_mean.dtype), alpha=average_factor
            )
            running_var.mul_(1 - average_factor).add_(
                unbiased.to(running_var.dtype), alpha=average_factor
            )
        else:
            mean, var, count = running_mean.to(dtype), running_var.to(dtype), 0.0
        invstd = torch.rsqrt(var + eps)
        scale = w * invstd
        xf.mul_(_per_channel(scale, x.dim())).add_(_per_channel(b - mean * scale, x.dim()))
        if activation == "leaky_relu":
            F.leaky_relu_(xf, slope)
        elif activation == "elu":
            F.elu_(xf)
        if xf is not x:
            x.copy_(xf)

        ctx.mark_dirty(x)
        ctx.save_for_backward(x, w, b, invstd)
        weight_dtype = None if weight is None else weight.dtype
        ctx.config = (training, count, activation, slope, sync, weight_dtype)
        return x

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        y, w, b, invstd = ctx.saved_tensors
        training, count, activation, slope, sync, weight_dtype = ctx.config
        dtype, ndim = w.dtype, y.dim()
        yf, dy = y.to(dtype), grad_out.to(dtype)

        # Invert the activation: recover its input z and the gradient dL/dz (never touching y).
        if activation == "leaky_relu":
            dz = torch.ops.aten.leaky_relu_backward(dy, yf, slope, True)
            z = F.leaky_relu(yf, 1.0 / slope)
        elif activation == "elu":
            dz = torch.ops.aten.elu_backward(dy, 1.0, 1.0, 1.0, True, yf)
            z = torch.log1p(yf.clamp(max=0)).add_(yf.clamp(min=0))
        else:
            z, dz = yf.clone(), dy
        # Invert the affine transform (in place: z is a fresh tensor): the normalised input x_hat.
        xhat = z.sub_(_per_channel(b, ndim)).div_(_per_channel(w, ndim))

        dims = [d for d in range(ndim) if d != 1]
        sum_dz = dz.sum(dims)
        sum_dz_xhat = (dz * xhat).sum(dims)
        # Parameter gradients are this rank's own sums (DDP then averages them over ranks).
        grad_weight = grad_bias = None
        if weight_dtype is not None:
            grad_weight, grad_bias = sum_dz_xhat.to(weight_dtype), sum_dz.to(weight_dtype)

        grad_x = None
        if ctx.needs_input_grad[0]:
            scale = _per_channel(w * invstd, ndim)
            if training:
                # The batch statistics depend on every rank's input: reduce the sums globally.
                sums = torch.stack([sum_dz, sum_dz_xhat])
                if sync:
                    all_reduce_sum(sums)
                mean_dz = _per_channel(sums[0] / count, ndim)
                mean_dz_xhat = _per_channel(sums[1] / count, ndim)
                # x_hat is not needed any more: its memory takes the result
                # (dz - mean(dz) - x_hat mean(dz x_hat)) w / std, the BatchNorm input gradient.
                grad_x = xhat.mul_(-mean_dz_xhat).sub_(mean_dz).add_(dz).mul_(scale)
            else:
                grad_x = dz * scale
            grad_x = grad_x.to(y.dtype)
        return grad_x, grad_weight, grad_bias, None, None, None, None, None, None, None, None


class InPlaceABN(ABN):
    """ABN whose forward overwrites its input and whose backward needs only the output.

    Same parameters, buffers, running statistics and results as ``ABN`` (BatchNorm2d +
    activation). Leaky ReLU needs ``slope > 0`` to be invertible. A leaf tensor that requires
    grad cannot be overwritten (autograd forbids it), so it is copied first; any other input,
    including under ``torch.no_grad()``, is overwritten.
    """

    sync = False

    def __init__(
        self,
        num_features: int,
        activation: str = "leaky_relu",
        slope: float = 0.01,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
    ) -> None:
        super().__init__(num_features, activation, slope, eps, momentum, affine)
        if self.activation == "leaky_relu" and slope <= 0:
            raise ValueError(f"InPlaceABN needs slope > 0 to invert leaky_relu, got {slope}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        average_factor = 0.0
        if self.training:
            if self.num_batches_tracked is not None:
                self.num_batches_tracked.add_(1)
            if self.momentum is None:
                average_factor = 1.0 / float(self.num_batches_tracked)
            else:
                average_factor = self.momentum
        if x.is_leaf and x.requires_grad:
            x = x.clone()
        # ReLU cannot be inverted (negative inputs are lost), so the norm runs in place and the
        # ReLU after it keeps its own output: BatchNorm + ReLU as HRNet trains, no memory saved.
        in_place_activation = "identity" if self.activation == "relu" else self.activation
        out = _InPlaceABNFunction.apply(
            x,
            self.weight,
            self.bias,
            self.running_mean,
            self.running_var,
            self.training,
            average_factor,
            self.eps,
            in_place_activation,
            self.slope,
            self.sync,
        )
        return F.relu(out) if self.activation == "relu" else out


class InPlaceABNSync(InPlaceABN):
    """InPlaceABN with batch statistics over all ranks of the default process group.

    Without an initialised process group it is exactly ``InPlaceABN``. Ranks may hold different
    batch sizes: sums and counts are reduced, not per-rank means.
    """

    sync = True
