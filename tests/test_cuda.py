"""The GPU tier: CUDA against CPU float64, the attention kernels, AMP, compile, recompute, DDP over
NCCL, preemption and the tools on CUDA. ``pytest -m cuda``; every test skips without a GPU.

``OCNET_CUDA_TESTS_ON_CPU=1`` runs the tests that make sense on any device with the CPU in the
GPU's place (a smoke run of their logic on a machine without a GPU); the kernel, memory and NCCL
tests still skip there.
"""

from __future__ import annotations

import copy
import json
import math
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from test_export import META, check_onnx, data_args, onnx_model, setup  # noqa: F401 (fixture)
from test_preemption import start_train
from test_train import cli, final_weights, metrics, run_main, write_scenes

import evaluate
import predict
from bench.gpu import training_run
from engine.export import export_onnx
from engine.launch import PREEMPTED_STATUS
from engine.training import FaultHooks, train_step
from inplace_abn import ABN
from network import METHODS, get_segmentation_model, split_model_name
from oc_module.attention import attention_backend, softmax_attention

ON_CPU = os.environ.get("OCNET_CUDA_TESTS_ON_CPU") == "1"
if torch.cuda.is_available():
    DEVICE = torch.device("cuda", 0)
elif ON_CPU:
    DEVICE = torch.device("cpu")
else:
    DEVICE = None

cuda = pytest.mark.cuda
needs_device = pytest.mark.skipif(DEVICE is None, reason="no CUDA device")
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
NETWORKS = ("resnet18", "resnet101", "hrnetv2_w18", "hrnetv2_w48")


@pytest.fixture(autouse=True)
def exact_float32():
    """No TF32 in matmuls and convolutions, so float32 means float32 in the comparisons."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def outputs(model: torch.nn.Module, image: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        out = model(image)
    return out if isinstance(out, list) else [out]


def with_context(model: torch.nn.Module) -> torch.nn.Module:
    """The context switched on (each ``W`` starts at zero), so the heads' attention counts."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if ".W." in f".{name}" and parameter.dim() == 4:
                parameter.normal_(0, 0.05)
    return model


# ------------------------------------------------------------------------------------------------
# CUDA float32 equals CPU float64


@cuda
@needs_device
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("network", NETWORKS)
def test_cuda_float32_equals_cpu_float64(network, method):
    """Tolerance: float32 rounds each product-sum of K terms with a relative error of about
    eps * sqrt(K) (eps = 6e-8, K <= 4608 for a 3x3 conv over 512 channels: 4e-6); a hundred
    layers in sequence give about 4e-4 of the output scale. 2e-3 of the largest output leaves
    room for the softmax and the eval-mode norms, and is far below a wrong kernel's error (of
    the order of the output itself)."""
    torch.manual_seed(0)
    model = with_context(get_segmentation_model(f"{network}_{method}", 19, norm_layer=ABN)).eval()
    image = torch.randn(2, 3, 97, 129)
    reference = outputs(copy.deepcopy(model).double(), image.double())
    actual = outputs(model.to(DEVICE), image.to(DEVICE))
    for ours, expected in zip(actual, reference, strict=True):
        error = (ours.double().cpu() - expected).abs().max() / expected.abs().max()
        assert error < 2e-3, (network, method, float(error))


# ------------------------------------------------------------------------------------------------
# Which attention kernel runs


def test_attention_backend_choice_on_cpu():
    """The CPU rules (DESIGN.md): flash for equal contiguous widths without autograd, chunked
    with autograd or mixed widths, plain while exporting, empty without keys."""
    q = torch.randn(1, 64, 50)
    wide = torch.randn(1, 128, 50)
    assert attention_backend(q, q, q) == "flash"
    assert attention_backend(q, q, wide) == "chunked"
    assert attention_backend(q, q.requires_grad_(), q) == "chunked"
    with torch.no_grad():
        assert attention_backend(q, q, q) == "flash"
    assert attention_backend(q, q[:, :, :0], q[:, :, :0]) == "empty"
    # The reported path is the one that runs: its result equals plain attention.
    expected = torch.softmax(q.detach().transpose(1, 2) @ q.detach() / 8, -1) @ wide.transpose(1, 2)
    got = softmax_attention(q.detach(), q.detach(), wide)
    torch.testing.assert_close(got, expected.transpose(1, 2), rtol=1e-5, atol=1e-5)


KERNELS = {
    "flash": "FLASH_ATTENTION",
    "efficient": "EFFICIENT_ATTENTION",
    "cudnn": "CUDNN_ATTENTION",
}


@cuda
@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", [f"resnet18_{m}" for m in METHODS if m != "baseline"])
def test_each_head_uses_the_kernel_it_reports(name, dtype, record_property):
    """The path of every attention call of a forward (autocast for half types), with autograd;
    a fused path must run when SDPA is restricted to that one kernel (else it raises)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    torch.manual_seed(0)
    model = get_segmentation_model(name, 19).to(DEVICE).train()
    image = torch.randn(2, 3, 129, 129, device=DEVICE)
    calls = []
    original = softmax_attention

    def restricted(query, key, value, *args, **kwargs):
        path = attention_backend(query, key, value)
        calls.append(path)
        if path in KERNELS:
            with sdpa_kernel([getattr(SDPBackend, KERNELS[path])]):
                return original(query, key, value, *args, **kwargs)
        return original(query, key, value, *args, **kwargs)

    import oc_module.attention
    import oc_module.isa
    import oc_module.ocr

    holders = (oc_module.attention, oc_module.isa, oc_module.ocr)
    for holder in holders:
        holder.softmax_attention = restricted
    try:
        with torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
            out = model(image)
        sum(o.float().mean() for o in out).backward()
    finally:
        for holder in holders:
            holder.softmax_attention = original
    record_property("attention_paths", ",".join(calls))
    print(f"{name} {dtype}: {calls}")
    assert calls and all(p in (*KERNELS, "chunked") for p in calls), calls
    if dtype != torch.float32 and name.endswith("base_oc_dsn"):
        # key = value = 256 wide: a fused kernel exists for half types on every recent GPU.
        assert all(p in KERNELS for p in calls), calls


@cuda
@needs_gpu
def test_base_oc_on_a_whole_frame_stays_linear_in_memory():
    """Base-OC on a 1024x2048 frame: N = 128 * 256 = 32768 positions at stride 8, so the exact
    N x N attention map alone is N^2 * 4 B = 4 GiB in float32. A kernel linear in N holds a few
    [C, N] maps instead (key 256 + value 256 + context 512 + the 2048-wide input, each 128 KiB
    per channel: about 400 MiB). Bound: Base-OC's peak minus the baseline's (same backbone,
    measured in this test) under 1 GiB, a quarter of the map."""
    peaks = {}
    image = torch.randn(1, 3, 1024, 2048, device=DEVICE)
    for method in ("baseline", "base_oc_dsn"):
        model = get_segmentation_model(f"resnet101_{method}", 19, norm_layer=ABN)
        model = with_context(model).eval().to(DEVICE)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        with torch.inference_mode():
            model(image)
        torch.cuda.synchronize()
        weights = sum(p.numel() * p.element_size() for p in model.parameters())
        peaks[method] = torch.cuda.max_memory_allocated() - weights
        del model
        torch.cuda.empty_cache()
    extra = peaks["base_oc_dsn"] - peaks["baseline"]
    print(f"Base-OC whole-frame extra peak: {extra / 2**20:.0f} MiB")
    assert extra < 2**30, extra / 2**20


# ------------------------------------------------------------------------------------------------
# Training steps


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cuda_scenes")
    write_scenes(root, "train", 4, seed=1)
    return root


def train_argv(scenes: Path, name: str, device: torch.device, *extra: str) -> list[str]:
    network, method = split_model_name(name)
    return [
        "--network", network, "--method", method, "--data-dir", str(scenes),
        "--data-list", str(scenes / "train.lst"), "--input-size", "65,65", "--batch-size", "2",
        "--num-steps", "1000", "--workers", "0", "--device", str(device),
        "--snapshot-dir", str(scenes / "unused"), "--seed", "7", *extra,
    ]  # fmt: skip


def fixed_batch_losses(argv: list[str], device: torch.device, steps: int, hooks=None):
    """``steps`` of ``train_step`` on one fixed batch; the losses, and the run's last state."""
    with training_run(argv, device) as (run, images, labels):
        losses = [
            train_step(run, images, labels, hooks or FaultHooks())["loss"] for _ in range(steps)
        ]
        state = {k: v.detach().cpu().clone() for k, v in run.model.state_dict().items()}
        scale = run.scaler.get_scale() if run.scaler.is_enabled() else None
    return losses, state, scale


TRAIN_MODELS = [f"resnet18_{m}" for m in METHODS] + ["hrnetv2_w18_ocr_dsn"]
OPTIONS = {
    "fp16": ["--amp", "fp16"],
    "bf16": ["--amp", "bf16"],
    "channels_last": ["--channels-last"],
    "recompute": ["--recompute"],
}


@cuda
@needs_device
@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("name", TRAIN_MODELS)
def test_training_steps_learn(scenes, name, option):
    losses, _, _ = fixed_batch_losses(train_argv(scenes, name, DEVICE, *OPTIONS[option]), DEVICE, 6)
    assert all(math.isfinite(x) for x in losses), losses
    assert min(losses[-2:]) < losses[0], losses


@cuda
@needs_gpu
@pytest.mark.parametrize("name", ["resnet18_base_oc_dsn", "hrnetv2_w18_ocr_dsn"])
def test_compiled_training_steps_learn(scenes, name):
    """--compile on two models (one per backbone family): compiling every method would take
    most of the GPU check's time budget."""
    losses, _, _ = fixed_batch_losses(train_argv(scenes, name, DEVICE, "--compile"), DEVICE, 6)
    assert all(math.isfinite(x) for x in losses), losses
    assert min(losses[-2:]) < losses[0], losses


@cuda
@needs_device
@pytest.mark.parametrize("name", TRAIN_MODELS)
def test_recompute_equals_no_recompute(scenes, name):
    """Deterministic kernels; what is left is the bilinear-upsampling backward's atomic adds,
    hence a tolerance instead of equality on CUDA."""
    argv = train_argv(scenes, name, DEVICE, "--deterministic")
    plain, plain_state, _ = fixed_batch_losses(argv, DEVICE, 3)
    recomputed, state, _ = fixed_batch_losses([*argv, "--recompute"], DEVICE, 3)
    assert recomputed == pytest.approx(plain, rel=1e-4)
    for key, value in plain_state.items():
        if value.is_floating_point():
            torch.testing.assert_close(state[key], value, rtol=1e-4, atol=1e-5, msg=key)


class Overflow(FaultHooks):
    """Makes one step's gradients infinite after the backward, as an fp16 overflow does."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at = at
        self.run = None
        self.before = None

    def after_backward(self, step: int) -> None:
        if step == self.at:
            parameter = next(self.run.model.parameters())
            parameter.grad.fill_(float("inf"))
            self.before = {k: v.detach().clone() for k, v in self.run.model.state_dict().items()}


def check_overflow_is_skipped(scenes: Path, device: torch.device) -> None:
    argv = train_argv(scenes, "resnet18_base_oc_dsn", device, "--amp", "fp16")
    with training_run(argv, device) as (run, images, labels):
        hooks = Overflow(at=2)
        hooks.run = run
        train_step(run, images, labels, hooks)
        scale = run.scaler.get_scale()
        train_step(run, images, labels, hooks)  # overflows: no update, the scale halves
        after = run.model.state_dict()
        unchanged = [k for k, v in hooks.before.items() if torch.equal(v, after[k])]
        weights = [k for k, v in after.items() if v.is_floating_point()]
        assert set(weights) <= set(unchanged), sorted(set(weights) - set(unchanged))[:3]
        assert run.scaler.get_scale() == scale / 2
        values = train_step(run, images, labels, hooks)  # and training goes on
        assert math.isfinite(values["loss"])
        assert run.iteration == 3


@cuda
@needs_device
def test_fp16_overflow_step_is_skipped_not_applied(scenes):
    check_overflow_is_skipped(scenes, DEVICE)


def test_fp16_overflow_step_is_skipped_on_cpu(scenes):
    """The same check through the CPU GradScaler (cheap: resnet18 at 65x65)."""
    try:
        torch.amp.GradScaler("cpu")
    except (RuntimeError, AssertionError) as error:  # an older torch without the CPU scaler
        pytest.skip(f"no CPU GradScaler: {error}")
    check_overflow_is_skipped(scenes, torch.device("cpu"))


# ------------------------------------------------------------------------------------------------
# DDP over NCCL, preemption


@cuda
@needs_gpu
def test_train_py_with_gpu_0(scenes, tmp_path):
    """``--gpu 0``: one process on cuda:0 (launch spawns nothing for a single GPU)."""
    snapshot = tmp_path / "gpu0"
    argv = cli(scenes, snapshot, "--device", "cuda", "--gpu", "0", "--num-steps", "4")
    run_main([*argv, "--save-pred-every", "100", "--method", "base_oc_dsn"])
    assert "1 process(es) on cuda:0" in (snapshot / "train.log").read_text()
    records = metrics(snapshot)
    assert [r["iteration"] for r in records] == [1, 2, 3, 4]
    assert all(math.isfinite(r["loss"]) for r in records)


@cuda
@needs_gpu
def test_ddp_over_nccl_with_synchronised_abn_equals_one_process(scenes):
    """A one-rank NCCL group, the model (InPlaceABNSync, the default norm) wrapped in DDP as
    build_run wraps it for several GPUs: the NCCL all-reduces of the gradients and of the norm
    statistics run, and with one rank the steps equal the unwrapped ones."""
    from torch.nn.parallel import DistributedDataParallel

    from inplace_abn import InPlaceABNSync
    from utils import distributed as dist_utils

    argv = train_argv(scenes, "resnet18_asp_oc_dsn", DEVICE, "--deterministic")
    plain, plain_state, _ = fixed_batch_losses(argv, DEVICE, 3)
    dist_utils.init_process_group("nccl", 0, 1, dist_utils.free_port())
    try:
        assert torch.distributed.get_backend() == "nccl"
        with training_run(argv, DEVICE) as (run, images, labels):
            assert any(isinstance(m, InPlaceABNSync) for m in run.model.modules())
            run.forward = DistributedDataParallel(run.model, device_ids=[DEVICE.index])
            losses = [train_step(run, images, labels, FaultHooks())["loss"] for _ in range(3)]
            state = {k: v.detach().cpu() for k, v in run.model.state_dict().items()}
    finally:
        dist_utils.destroy_process_group()
    assert losses == pytest.approx(plain, rel=1e-4)
    for key, value in plain_state.items():
        if value.is_floating_point():
            torch.testing.assert_close(state[key], value, rtol=1e-4, atol=1e-5, msg=key)


@cuda
@needs_gpu
def test_resume_after_sigterm_is_deterministic_up_to_the_upsampling_backward(scenes, tmp_path):
    """docs/training.md: with --deterministic a resumed CUDA run equals an uninterrupted one up to
    the bilinear-upsampling backward (atomic adds in any order). Measured here: the largest weight
    difference relative to the weight's scale after 8 steps, asserted below 1e-3 (a resume that
    lost any state, e.g. an RNG or the momentum, differs by the order of the updates, 1e-2)."""
    steps = ["--device", "cuda", "--threads", "4", "--num-steps", "8", "--save-pred-every", "100"]
    reference = tmp_path / "reference"
    run_main(cli(scenes, reference, *steps))
    snapshot = tmp_path / "preempted"
    argv = cli(scenes, snapshot, *steps)
    proc = start_train(argv, OCNET_FAULT_SIGNAL_AT="3")
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == PREEMPTED_STATUS, stderr[-2000:]
    run_main([*argv, "--resume"])
    ours, expected = final_weights(snapshot, 8), final_weights(reference, 8)
    worst = 0.0
    for key, value in expected.items():
        if value.is_floating_point():
            scale = max(value.abs().max().item(), 1e-6)
            worst = max(worst, (ours[key] - value).abs().max().item() / scale)
    print(f"resume on CUDA: largest relative weight difference {worst:.3g}")
    assert worst < 1e-3, worst


# ------------------------------------------------------------------------------------------------
# The tools on CUDA


@cuda
@needs_gpu
def test_evaluate_on_cuda_equals_cpu(setup, tmp_path):  # noqa: F811 (the fixture)
    scores = {}
    for device in ("cpu", "cuda"):
        argv = data_args(setup, tmp_path / device, setup["meta"])
        argv[argv.index("--device") + 1] = device
        evaluate.main(evaluate.get_args_parser().parse_args(argv))
        scores[device] = json.loads((tmp_path / device / "metrics.json").read_text())
    assert scores["cuda"]["mIoU"] == pytest.approx(scores["cpu"]["mIoU"], abs=1e-3)


@cuda
@needs_gpu
def test_predict_on_cuda_equals_cpu(setup, tmp_path):  # noqa: F811 (the fixture)
    image = Path(setup["root"]) / Path(setup["list"]).read_text().split()[0]
    labels = {}
    for device in ("cpu", "cuda"):
        out = tmp_path / device
        argv = ["--ckpt", str(setup["meta"]), "--output-dir", str(out), "--device", device]
        predict.main(predict.get_args_parser().parse_args([*argv, "--workers", "0", str(image)]))
        pngs = sorted(out.rglob("*.png"))
        assert pngs, f"predict.py wrote nothing on {device}"
        labels[device] = [cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in pngs]
    for cpu_label, cuda_label in zip(labels["cpu"], labels["cuda"], strict=True):
        assert np.mean(cpu_label != cuda_label) < 1e-3  # argmax ties only


@cuda
@needs_gpu
@pytest.mark.parametrize("method", ["base_oc_dsn", "ocr_dsn"])
def test_onnx_from_a_cuda_model_runs_in_onnxruntime_on_cpu(method, tmp_path):
    model = onnx_model(method)
    path = tmp_path / f"{method}.onnx"
    meta = {**META, "network": "resnet18", "method": method, "num_classes": 5}
    export_onnx(copy.deepcopy(model).to(DEVICE), meta, path, size=(64, 96))
    check_onnx(path, model, method)  # onnxruntime on CPU against the torch model
