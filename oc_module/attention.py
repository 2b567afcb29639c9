"""The attention primitive (paper Sec. 3.2) and OCNet's object context built from it.

Every head computes attention through :func:`softmax_attention`: OCNet's object context (query =
key), ISA's interlaced self-attention (separate query and key projections) and OCR's
pixel-to-region attention (queries are pixels, keys and values are K object regions) differ only
in where query, key and value come from and in the convs around the call.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn.attention import SDPBackend

from inplace_abn import NormLayer, default_norm_layer

# Elements of the [B, rows, N_k] similarity block the chunked path holds at once: 64 MiB in
# float32, 512 query rows of a full 1024x2048 frame at stride 8 (N_k = 128 * 256).
CHUNK_ELEMENTS = 2**24


def softmax_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    chunk_elements: int = CHUNK_ELEMENTS,
) -> torch.Tensor:
    """Softmax(Q^T K / sqrt(C_k)) V^T for every query position, each similarity computed once.

    ``query`` is ``[B, C_k, N_q]``, ``key`` ``[B, C_k, N_k]``, ``value`` ``[B, C_v, N_k]`` (conv
    outputs flattened over positions); returns ``[B, C_v, N_q]``. Memory stays linear in the
    number of positions: a fused SDPA kernel when PyTorch has one for these shapes (on CPU the
    flash kernel needs contiguous q, k, v of one width, e.g. key = value = 256; on CUDA the
    memory-efficient kernel also takes a wider value), otherwise query chunks of at most
    ``chunk_elements`` similarities (:class:`ChunkedAttention`). On CPU with autograd the chunks
    are used even for equal widths: the flash kernel's CPU backward measured about twice as
    slow as the chunked one (bench/attention.py), while its forward is the faster of the two.
    """
    if exporting():
        # A graph for other runtimes: plain matmul + softmax (they have no chunked kernel, and a
        # Python loop over chunks would freeze the traced size). Holds the N_q x N_k map.
        return torch.matmul(value, attention_weights(query, key).transpose(1, 2))
    if key.shape[2] == 0:  # nothing to attend to: no context (a softmax over no keys)
        return value.new_zeros(value.shape[0], value.shape[1], query.shape[2])
    q, k, v = sdpa_inputs(query, key, value)
    if _fused_backend(q, k, v) is not None:
        # The default SDPA scale is C_k ** -0.5, the original's.
        return F.scaled_dot_product_attention(q, k, v).squeeze(1).transpose(1, 2)
    scale = query.shape[1] ** -0.5
    context = chunked_attention(q.squeeze(1) * scale, k.squeeze(1), v.squeeze(1), chunk_elements)
    return context.transpose(1, 2)  # [B, N_q, C_v] -> [B, C_v, N_q]


# torch's SDPBackend values -> the names attention_backend reports.
FUSED_BACKENDS = {
    SDPBackend.FLASH_ATTENTION.value: "flash",
    SDPBackend.EFFICIENT_ATTENTION.value: "efficient",
    SDPBackend.CUDNN_ATTENTION.value: "cudnn",
}


def sdpa_inputs(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``[B, C, N]`` -> ``[B, 1, N, C]``: one head, positions as the sequence, contiguous."""
    return tuple(t.transpose(1, 2).contiguous().unsqueeze(1) for t in (query, key, value))


def _fused_backend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> str | None:
    """The fused SDPA kernel used for ``[B, 1, N, C]`` inputs, or None for the chunked path."""
    backward_on_cpu = q.device.type == "cpu" and (
        torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    )
    if backward_on_cpu or q.shape[2] == 0:  # e.g. Pyramid-OC's regions smaller than s x s
        return None
    return FUSED_BACKENDS.get(torch._fused_sdp_choice(q, k, v))


def attention_backend(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> str:
    """Which path :func:`softmax_attention` takes for these inputs, in this autograd state:
    ``flash``, ``efficient`` or ``cudnn`` (a fused SDPA kernel), ``chunked``, ``plain`` (while
    exporting) or ``empty`` (no keys). The tests and the GPU benchmark report it per head."""
    if exporting():
        return "plain"
    if key.shape[2] == 0:
        return "empty"
    return _fused_backend(*sdpa_inputs(query, key, value)) or "chunked"


def chunked_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, chunk_elements: int
) -> torch.Tensor:
    """Softmax(Q K^T) V in chunks of query rows; ``query`` ``[B, N_q, C_k]`` already scaled,
    ``key`` ``[B, N_k, C_k]``, ``value`` ``[B, N_k, C_v]``; returns ``[B, N_q, C_v]``.

    A chunk holds ``[B, rows, N_k]`` similarities, ``rows = chunk_elements // (B * N_k)`` (at
    least one row): one such block in the forward, two in the backward.
    """
    per_row = max(1, query.shape[0] * key.shape[1])
    rows = max(1, min(query.shape[1], chunk_elements // per_row))
    return ChunkedAttention.apply(query, key, value, rows)


def exp_similarities(
    query: torch.Tensor, key_t: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
    """Softmax numerators of one chunk: ``[B, rows, C_k]`` queries, ``[B, C_k, N_k]`` keys ->
    ``exp(q k - row max)``, ``[B, rows, N_k]``, written into ``out`` when given."""
    scores = torch.matmul(query, key_t, out=out)
    return scores.sub_(scores.amax(-1, keepdim=True)).exp_()


class ChunkedAttention(torch.autograd.Function):
    """Chunked softmax attention with a chunked backward that recomputes each chunk's weights.

    Plain autograd would keep every chunk's weights for the backward, the N x N map again. Here
    the backward recomputes them from q and k (as flash attention does) and applies the softmax
    gradient ``dS = P * (dP - rowsum(dO * O))`` chunk by chunk. Each similarity is computed once
    in the forward and once in the backward. One block buffer serves every full chunk: a fresh
    64 MiB block per chunk costs page faults comparable to its softmax.
    """

    @staticmethod
    def forward(
        ctx, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, rows: int
    ) -> torch.Tensor:
        batch, queries, _ = query.shape
        key_t = key.transpose(1, 2)  # [B, C_k, N_k], a view: the matmul reads it transposed
        block = query.new_empty(batch, rows, key.shape[1])
        context = query.new_empty(batch, queries, value.shape[2])
        for start in range(0, queries, rows):
            chunk = query[:, start : start + rows]
            # The last chunk may be shorter than the buffer.
            weights = exp_similarities(chunk, key_t, block if chunk.shape[1] == rows else None)
            # Normalising after the value product divides rows x C_v numbers, not rows x N_k.
            context[:, start : start + rows] = weights @ value / weights.sum(-1, keepdim=True)
        ctx.save_for_backward(query, key, value, context)
        ctx.rows = rows
        return context

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_context: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        query, key, value, context = ctx.saved_tensors
        rows = ctx.rows
        batch, queries, _ = query.shape
        key_t, value_t = key.transpose(1, 2), value.transpose(1, 2)
        grad_query = torch.empty_like(query)
        grad_key, grad_value = torch.zeros_like(key), torch.zeros_like(value)
        # rowsum(dO * O): the softmax Jacobian's correction term, [B, N_q, 1].
        correction = (grad_context * context).sum(-1, keepdim=True)
        weights_block = query.new_empty(batch, rows, key.shape[1])
        grad_block = torch.empty_like(weights_block)
        for start in range(0, queries, rows):
            chunk = query[:, start : start + rows]
            grad_chunk = grad_context[:, start : start + rows]
            full = chunk.shape[1] == rows
            weights = exp_similarities(chunk, key_t, weights_block if full else None)
            weights = weights.div_(weights.sum(-1, keepdim=True))  # P, [B, rows, N_k]
            grad_value.baddbmm_(weights.transpose(1, 2), grad_chunk)  # dV += P^T dO
            grad_scores = torch.matmul(grad_chunk, value_t, out=grad_block if full else None)
            grad_scores = grad_scores.sub_(correction[:, start : start + rows]).mul_(weights)
            grad_query[:, start : start + rows] = grad_scores @ key  # dQ = dS K
            grad_key.baddbmm_(grad_scores.transpose(1, 2), chunk)  # dK += dS^T Q
        return grad_query, grad_key, grad_value, None


def exporting() -> bool:
    """Whether the model is being traced or exported (ONNX, ``torch.export``), not run."""
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting()


def attention_weights(
    query: torch.Tensor, key: torch.Tensor, allowed: torch.Tensor | None = None
) -> torch.Tensor:
    """The softmax weights of a few queries: ``[B, C_k, N_q]``, ``[B, C_k, N_k]`` ->
    ``[B, N_q, N_k]``, with :func:`softmax_attention`'s scale. For pictures of one pixel's
    attention, where the N x N map would not fit, and for exported graphs. ``allowed``
    (``[N_q, N_k]`` bool) restricts each query to some keys; every row needs one."""
    similarity = torch.matmul(query.transpose(1, 2), key) * query.shape[1] ** -0.5
    if allowed is not None:
        similarity = similarity.masked_fill(~allowed, float("-inf"))
    return torch.softmax(similarity, dim=-1)


def object_attention(key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """OCNet's attention over all pixels of each map, query = key.

    ``key`` is ``[B, C_k, H, W]``, ``value`` ``[B, C_v, H, W]``; returns ``[B, C_v, H, W]``.
    """
    batch, _, height, width = key.shape
    key = key.flatten(2)  # [B, C_k, H*W]
    context = softmax_attention(key, key, value.flatten(2))  # [B, C_v, H*W]
    return context.reshape(batch, value.shape[1], height, width)


class ObjectContext(nn.Module):
    """Object context of every pixel: attention-weighted values of all pixels, projected by ``W``.

    Parameter names follow the original (``f_key``, ``f_query``, ``f_value``, ``W``) so its
    checkpoints load. ``scale > 1`` max-pools the map first and upsamples the context back
    (bilinear, align_corners=True), the original's memory saving used by ASP-OC (scale 2).
    ``W`` starts at zero, so a fresh block adds no context until trained (as the original).
    """

    def __init__(
        self,
        in_ch: int,
        key_ch: int,
        value_ch: int,
        out_ch: int | None = None,
        scale: int = 1,
        norm_layer: NormLayer | None = None,
    ) -> None:
        super().__init__()
        norm_layer = norm_layer or default_norm_layer()
        out_ch = in_ch if out_ch is None else out_ch
        self.scale = scale
        self.key_channels = key_ch
        self.value_channels = value_ch
        self.f_key = nn.Sequential(nn.Conv2d(in_ch, key_ch, kernel_size=1), norm_layer(key_ch))
        # The original shares one module between key and query, saved under both names.
        self.f_query = self.f_key
        self.f_value = nn.Conv2d(in_ch, value_ch, kernel_size=1)
        self.W = nn.Conv2d(value_ch, out_ch, kernel_size=1)
        nn.init.zeros_(self.W.weight)
        nn.init.zeros_(self.W.bias)

    def attend(self, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """Which pixels attend to which: here, all pixels of the map."""
        return object_attention(key, value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[2:]
        if self.scale > 1:
            x = F.max_pool2d(x, kernel_size=self.scale)
        # The original calls f_query and f_key separately (same module, so the same outputs, but
        # its BN statistics update twice per step); here the projection runs once per forward.
        key = self.f_key(x)
        context = self.W(self.attend(key, self.f_value(x)))
        if self.scale > 1:
            context = F.interpolate(
                context, size=(height, width), mode="bilinear", align_corners=True
            )
        return context
