"""InPlaceABN / InPlaceABNSync against nn.BatchNorm2d followed by the activation."""

from __future__ import annotations

import re

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from inplace_abn import ABN, InPlaceABN, InPlaceABNSync

ACTIVATIONS = {
    "leaky_relu": lambda t: F.leaky_relu(t, 0.01),
    "relu": F.relu,
    "elu": F.elu,
    "identity": lambda t: t,
    "none": lambda t: t,
}
CLASSES = [InPlaceABN, InPlaceABNSync]


def reference_pair(cls, activation, momentum=0.1, channels=3, seed=0):
    """A float64 BatchNorm2d with non-trivial parameters (some negative weights) and a copy."""
    torch.manual_seed(seed)
    bn = nn.BatchNorm2d(channels, momentum=momentum).double()
    with torch.no_grad():
        bn.weight.copy_(torch.linspace(-1.5, 2.0, channels))
        bn.bias.normal_()
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
    module = cls(channels, activation=activation, momentum=momentum).double()
    state = {k: v for k, v in bn.state_dict().items() if k != "num_batches_tracked"}
    module.load_state_dict(state, strict=momentum is not None)
    return bn, module


def step(module, x, grad, activation=None):
    """One forward + backward of sum(out * grad); returns output and input gradient."""
    leaf = x.clone().requires_grad_()
    # Feed a non-leaf (as a convolution's output would be), so the in-place path is exercised.
    out = module(leaf * 1.0)
    if activation is not None:
        out = ACTIVATIONS[activation](out)
    (out * grad).sum().backward()
    return out.detach().clone(), leaf.grad


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
@pytest.mark.parametrize("training", [True, False])
def test_matches_batchnorm_and_activation(cls, activation, training):
    bn, module = reference_pair(cls, activation)
    bn.train(training)
    module.train(training)
    for i in range(3):
        generator = torch.Generator().manual_seed(i)
        x = torch.randn(4, 3, 5, 6, dtype=torch.float64, generator=generator) * 2 + 0.5
        grad = torch.randn(x.shape, dtype=torch.float64, generator=generator)
        bn.zero_grad()
        module.zero_grad()
        expected_out, expected_dx = step(bn, x, grad, activation)
        out, dx = step(module, x, grad)
        torch.testing.assert_close(out, expected_out, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(dx, expected_dx, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(module.weight.grad, bn.weight.grad, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(module.bias.grad, bn.bias.grad, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(module.running_mean, bn.running_mean, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(module.running_var, bn.running_var, rtol=1e-12, atol=1e-12)
    if training:
        assert not torch.equal(module.running_var, bn.running_var.new_ones(3))


@pytest.mark.parametrize("cls", CLASSES)
def test_momentum_none_is_cumulative_average(cls):
    bn, module = reference_pair(cls, "leaky_relu", momentum=None)
    batches = [torch.randn(2, 3, 4, 4, dtype=torch.float64) * (i + 1) + i for i in range(4)]
    for x in batches:
        bn(x.clone())
        module(x.clone())
    torch.testing.assert_close(module.running_mean, bn.running_mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(module.running_var, bn.running_var, rtol=1e-12, atol=1e-12)
    assert module.num_batches_tracked.item() == 4
    # Hand-computed: after resetting, a cumulative average is the plain mean of the batch means.
    module.reset_running_stats()
    for x in batches:
        module(x.clone())
    means = torch.stack([x.mean(dim=(0, 2, 3)) for x in batches]).mean(0)
    variances = torch.stack([x.var(dim=(0, 2, 3), unbiased=True) for x in batches]).mean(0)
    torch.testing.assert_close(module.running_mean, means, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(module.running_var, variances, rtol=1e-12, atol=1e-12)


def test_tiny_weight_is_guarded_and_gradients_stay_exact():
    """A zero weight would make the backward divide by zero; the guard keeps it finite."""
    module = InPlaceABN(2, activation="identity").double()
    with torch.no_grad():
        module.weight.copy_(torch.tensor([0.0, 1.0]))
    x = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    out, dx = step(module, x, torch.ones_like(x))
    assert torch.isfinite(dx).all() and torch.isfinite(module.weight.grad).all()
    xhat = (x - x.mean(dim=(0, 2, 3), keepdim=True)) / torch.sqrt(
        x.var(dim=(0, 2, 3), unbiased=False, keepdim=True) + 1e-5
    )
    # Channel 0 uses weight eps = 1e-5 (the module's eps), channel 1 is exactly BatchNorm.
    torch.testing.assert_close(out[:, 0], 1e-5 * xhat[:, 0], rtol=1e-9, atol=1e-15)
    torch.testing.assert_close(out[:, 1], xhat[:, 1], rtol=1e-9, atol=1e-12)


def test_saved_tensors_exclude_the_input():
    """The graph keeps one activation-sized tensor: the output, living in the input's memory."""
    torch.manual_seed(0)
    leaf = torch.randn(2, 4, 8, 8, requires_grad=True)
    full = leaf.numel()

    def saved_by(module, x):
        saved = []

        def pack(t):
            saved.append((t.data_ptr(), t.numel()))
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = module(x)
        return out, [ptr for ptr, numel in saved if numel == full], sum(n for _, n in saved)

    x = leaf.clone()
    input_ptr = x.data_ptr()
    out, big, total = saved_by(InPlaceABN(4), x)
    assert out.data_ptr() == input_ptr and big == [input_ptr]
    assert total <= full + 3 * 4  # plus weight, bias and 1/std per channel
    out.sum().backward()
    assert leaf.grad is not None

    reference = nn.Sequential(nn.BatchNorm2d(4), nn.LeakyReLU(0.01))
    out, big, _ = saved_by(reference, leaf.clone())
    assert len(set(big)) == 2  # the norm's input and the activation's input


def test_leaf_requiring_grad_is_copied_and_other_inputs_are_overwritten():
    leaf = torch.randn(2, 3, 4, 4, requires_grad=True)
    before = leaf.detach().clone()
    out = InPlaceABN(3)(leaf)
    assert torch.equal(leaf.detach(), before) and out.data_ptr() != leaf.data_ptr()

    x = torch.randn(2, 3, 4, 4)
    with torch.no_grad():
        out = InPlaceABN(3)(x)
    assert out.data_ptr() == x.data_ptr() and torch.equal(out, x)


def test_state_dict_names_and_original_checkpoint_loads_strictly():
    bn = nn.BatchNorm2d(5)
    original = {k: torch.rand_like(v.float()) for k, v in bn.state_dict().items()}
    del original["num_batches_tracked"]
    for cls in (ABN, InPlaceABN, InPlaceABNSync):
        module = cls(5)
        assert list(module.state_dict()) == ["weight", "bias", "running_mean", "running_var"]
        module.load_state_dict(original, strict=True)
        assert torch.equal(module.running_var, original["running_var"])
        module.load_state_dict(bn.state_dict(), strict=True)  # a torch BatchNorm2d's as well


def test_unknown_activation_and_non_invertible_slope_raise():
    message = (
        "activation must be one of ('leaky_relu', 'relu', 'elu', 'identity', 'none'), got 'gelu'"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        InPlaceABN(4, activation="gelu")
    with pytest.raises(ValueError, match=re.escape("needs slope > 0 to invert leaky_relu, got 0")):
        InPlaceABNSync(4, slope=0)


def test_single_value_per_channel_raises_like_batchnorm():
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        InPlaceABN(3)(torch.randn(1, 3, 1, 1))


def test_autocast_bf16_keeps_fp32_statistics():
    torch.manual_seed(0)
    x = (torch.randn(4, 6, 8, 8) * 3 + 1).to(torch.bfloat16)
    grad = torch.randn(x.shape)
    module, bn = InPlaceABNSync(6), nn.BatchNorm2d(6)
    leaf = x.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = module(leaf * 1)
    (out.float() * grad).sum().backward()
    assert out.dtype == torch.bfloat16 and leaf.grad.dtype == torch.bfloat16
    assert module.running_mean.dtype == module.running_var.dtype == torch.float32
    assert module.weight.grad.dtype == torch.float32

    reference_leaf = x.float().requires_grad_()
    expected = F.leaky_relu(bn(reference_leaf), 0.01)
    (expected * grad).sum().backward()
    torch.testing.assert_close(module.running_mean, bn.running_mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(module.running_var, bn.running_var, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.float(), expected, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(leaf.grad.float(), reference_leaf.grad, rtol=5e-2, atol=5e-2)
    torch.testing.assert_close(module.weight.grad, bn.weight.grad, rtol=5e-2, atol=5e-1)


# Two ranks with unequal batches; the reference is one process on the concatenated batch.
BATCHES = (3, 1)
STEPS = 2


def make_batch(step_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(100 + step_index)
    x = torch.randn(sum(BATCHES), 4, 3, 5, dtype=torch.float64, generator=generator) * 2 + 1
    return x, torch.randn(x.shape, dtype=torch.float64, generator=generator)


def _sync_worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size
    )
    try:
        _, module = reference_pair(InPlaceABNSync, "leaky_relu", channels=4)
        start = sum(BATCHES[:rank])
        results = {}
        for i in range(STEPS):
            x, grad = make_batch(i)
            rows = slice(start, start + BATCHES[rank])
            module.zero_grad()
            out, dx = step(module, x[rows], grad[rows])
            results[f"out{i}"], results[f"dx{i}"] = out, dx
            results[f"dw{i}"] = module.weight.grad.clone()
            results[f"db{i}"] = module.bias.grad.clone()
        results["running_mean"] = module.running_mean.clone()
        results["running_var"] = module.running_var.clone()
        module.eval()
        results["eval"] = step(module, *(t[rows] for t in make_batch(STEPS)))[0]
        torch.save(results, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_sync_two_processes_unequal_batches_match_one_process(tmp_path):
    mp.spawn(_sync_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]

    bn, _ = reference_pair(InPlaceABNSync, "leaky_relu", channels=4)
    close = {"rtol": 1e-10, "atol": 1e-10}
    for i in range(STEPS):
        bn.zero_grad()
        out, dx = step(bn, *make_batch(i), activation="leaky_relu")
        torch.testing.assert_close(torch.cat([r[f"out{i}"] for r in ranks]), out, **close)
        # Input gradients of the summed loss: each rank holds its slice of the full gradient.
        torch.testing.assert_close(torch.cat([r[f"dx{i}"] for r in ranks]), dx, **close)
        # Parameter gradients are per-rank sums; their sum over ranks is the full-batch gradient
        # (DDP averages, i.e. divides this sum by the world size, as it does for every parameter).
        torch.testing.assert_close(ranks[0][f"dw{i}"] + ranks[1][f"dw{i}"], bn.weight.grad, **close)
        torch.testing.assert_close(ranks[0][f"db{i}"] + ranks[1][f"db{i}"], bn.bias.grad, **close)
        assert not torch.allclose(ranks[0][f"dw{i}"], bn.weight.grad)
    for r in ranks:
        torch.testing.assert_close(r["running_mean"], bn.running_mean, **close)
        torch.testing.assert_close(r["running_var"], bn.running_var, **close)
    bn.eval()
    expected_eval = F.leaky_relu(bn(make_batch(STEPS)[0]), 0.01)
    torch.testing.assert_close(torch.cat([r["eval"] for r in ranks]), expected_eval, **close)


def _network_methods() -> list[str]:
    try:
        from network import METHODS
    except ImportError:
        return []
    return list(METHODS)


@pytest.mark.slow
@pytest.mark.parametrize("method", _network_methods())
def test_segmentation_model_is_unchanged_by_in_place_norm(method):
    """Every head feeds InPlaceABNSync tensors nobody else needs: same results as with ABN."""
    network = pytest.importorskip("network")
    if not hasattr(network, "get_segmentation_model"):
        pytest.skip("network.get_segmentation_model is not available")
    name = f"resnet18_{method}"
    reference = network.get_segmentation_model(name, num_classes=3, norm_layer=ABN).double()
    model = network.get_segmentation_model(name, num_classes=3, norm_layer=InPlaceABNSync)
    with torch.no_grad():  # zero-initialised W would make constant (zero-variance) channels
        for p in reference.parameters():
            if not p.any():
                p.normal_(0, 0.1)
    model.double().load_state_dict(reference.state_dict())
    x = torch.randn(2, 3, 25, 25, dtype=torch.float64)
    results = []
    for m in (reference.train(), model.train()):
        torch.manual_seed(0)  # the same dropout masks
        leaf = x.clone().requires_grad_()
        outputs = m(leaf)
        outputs = outputs if isinstance(outputs, list) else [outputs]
        sum(o.square().sum() for o in outputs).backward()
        results.append((outputs, leaf.grad, [p.grad for p in m.parameters()]))
    (expected, expected_dx, expected_grads), (outputs, dx, grads) = results
    for out, ref in zip(outputs, expected, strict=True):
        torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(dx, expected_dx, rtol=1e-9, atol=1e-12)
    # Absolute tolerance: biases of convolutions followed by a norm have (numerically) zero grad.
    scale = max(g.abs().max().item() for g in expected_grads)
    for grad, ref in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(grad, ref, rtol=1e-7, atol=1e-10 * scale)
