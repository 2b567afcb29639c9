"""--recompute: activation recomputation gives the same losses, weights and norm statistics.

The reference is the same model without recomputation (the plain autograd graph); the norm
statistics are also checked against the count a single update per step gives.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from test_train import assert_same_weights, cli, final_weights, run_main, write_scenes
from torch import nn

import utils.recompute
from engine.launch import PREEMPTED_STATUS
from inplace_abn import InPlaceABN
from network import METHODS, get_segmentation_model
from utils.recompute import enable_recompute, recompute_plan

pytestmark = pytest.mark.usefixtures("one_thread")

MODELS = [f"resnet18_{method}" for method in METHODS] + ["hrnetv2_w18_ocr_dsn"]


def train_steps(model: nn.Module, steps: int, size: int = 33, amp: torch.dtype | None = None):
    """``steps`` SGD steps on fixed random data; returns the losses and the RNG state after."""
    torch.manual_seed(3)
    x = torch.randn(2, 3, size, size)
    y = torch.randint(0, 5, (2, size, size))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    torch.manual_seed(4)  # dropout masks come from here
    losses = []
    for _ in range(steps):
        with torch.autocast("cpu", dtype=amp, enabled=amp is not None):
            out = model(x)
        outs = out if isinstance(out, list) else [out]
        loss = sum(
            F.cross_entropy(F.interpolate(o.float(), (size, size), mode="bilinear"), y)
            for o in outs
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses, torch.get_rng_state()


@pytest.mark.parametrize("name", MODELS)
def test_recompute_gives_the_same_losses_weights_and_statistics(name):
    torch.manual_seed(0)
    plain = get_segmentation_model(name, num_classes=5)
    recomputed = copy.deepcopy(plain)
    keys = list(recomputed.state_dict())
    wrapped = enable_recompute(recomputed)
    assert list(recomputed.state_dict()) == keys  # checkpoints do not notice
    heads = [*recomputed.head_names, recomputed.aux_name]
    assert {n for n in heads if n and next(getattr(recomputed, n).children(), None)} <= set(wrapped)
    assert any(n.startswith(("layer", "stage")) for n in wrapped if n not in heads)

    expected_losses, expected_rng = train_steps(plain, steps=2)
    losses, rng = train_steps(recomputed, steps=2)
    assert losses == expected_losses
    # Running statistics (and every other buffer) included: updated once per step.
    assert_same_weights(recomputed.state_dict(), plain.state_dict())
    # The recomputation replays the dropout masks without moving the outer random stream.
    assert torch.equal(rng, expected_rng)


def test_recompute_under_bf16_autocast():
    torch.manual_seed(0)
    plain = get_segmentation_model("resnet18_asp_oc_dsn", num_classes=5)
    recomputed = copy.deepcopy(plain)
    enable_recompute(recomputed)
    losses, rng = train_steps(recomputed, 2, amp=torch.bfloat16)
    expected_losses, expected_rng = train_steps(plain, 2, amp=torch.bfloat16)
    assert losses == expected_losses and torch.equal(rng, expected_rng)
    assert_same_weights(recomputed.state_dict(), plain.state_dict())


class Block(nn.Module):
    def __init__(self, norm: type[nn.Module]) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.norm = norm(4)
        self.drop = nn.Dropout2d(0.5)

    def forward(self, x):
        return self.drop(F.relu(self.norm(self.conv(x)))) + x


class Toy(nn.Module):
    """A backbone stage of BatchNorm2d blocks and an InPlace-ABN head, named as the models are."""

    head_names = ("head",)
    aux_name = None

    def __init__(self) -> None:
        super().__init__()
        self.layer1 = nn.Sequential(*(Block(nn.BatchNorm2d) for _ in range(3)))
        self.head = nn.Sequential(nn.Conv2d(4, 4, 1), InPlaceABN(4), nn.Dropout2d(0.5))

    def forward(self, x):
        return self.head(self.layer1(x))


def toy_step(model: nn.Module) -> None:
    torch.manual_seed(1)
    model.train()
    model(torch.randn(2, 4, 8, 8)).square().mean().backward()


def test_norm_statistics_update_once_per_step(monkeypatch):
    torch.manual_seed(0)
    plain = Toy()
    recomputed, doubled = copy.deepcopy(plain), copy.deepcopy(plain)
    assert [(n, how) for n, _, how in recompute_plan(recomputed)] == [
        ("layer1", "segments"),
        ("head", "whole"),
    ]
    enable_recompute(recomputed)
    toy_step(plain)
    toy_step(recomputed)
    for block in recomputed.layer1:
        assert int(block.norm.num_batches_tracked) == 1
    assert_same_weights(recomputed.state_dict(), plain.state_dict())
    grads = {n: p.grad for n, p in plain.named_parameters()}
    for n, p in recomputed.named_parameters():
        assert torch.equal(p.grad, grads[n]), n

    # Without putting the buffers back, the recomputation would update them a second time:
    # the check above would see it.
    monkeypatch.setattr(
        utils.recompute,
        "_contexts",
        lambda modules: (utils.recompute.contextlib.nullcontext(),) * 2,
    )
    enable_recompute(doubled)
    toy_step(doubled)
    assert int(doubled.layer1[0].norm.num_batches_tracked) == 2


def test_eval_and_no_grad_forwards_are_untouched():
    torch.manual_seed(0)
    model = get_segmentation_model("resnet18_base_oc_dsn", num_classes=5).eval()
    reference = copy.deepcopy(model)
    enable_recompute(model)
    x = torch.randn(1, 3, 33, 33)
    with torch.no_grad():
        for a, b in zip(model(x), reference(x)):
            assert torch.equal(a, b)


# ------------------------------------------------------------------------------------------------
# train.py --recompute


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("scenes")
    write_scenes(root, "train", 4, seed=1)
    return root


def metrics(snapshot: Path) -> list[dict]:
    return [json.loads(line) for line in (snapshot / "metrics.jsonl").read_text().splitlines()]


def test_train_recompute_equals_a_plain_run(data, tmp_path):
    argv = ["--num-steps", "3", "--save-pred-every", "10"]
    run_main(cli(data, tmp_path / "plain", *argv))
    run_main(cli(data, tmp_path / "recompute", *argv, "--recompute"))
    assert metrics(tmp_path / "recompute") == metrics(tmp_path / "plain")
    assert_same_weights(
        final_weights(tmp_path / "recompute", 3), final_weights(tmp_path / "plain", 3)
    )
    assert (
        "--recompute: activations of layer1" in (tmp_path / "recompute" / "train.log").read_text()
    )


@pytest.mark.slow
def test_train_recompute_with_ddp_and_resume_equals_a_plain_run(data, tmp_path, monkeypatch):
    """Two gloo processes: plain vs. --recompute stopped by SIGTERM at step 2 and resumed."""
    argv = ["--nproc", "2", "--num-steps", "4", "--save-pred-every", "10"]
    run_main(cli(data, tmp_path / "plain", *argv))
    snapshot = tmp_path / "recompute"
    monkeypatch.setenv("OCNET_FAULT_SIGNAL_AT", "2")
    with pytest.raises(SystemExit) as stopped:
        run_main(cli(data, snapshot, *argv, "--recompute"))
    assert stopped.value.code == PREEMPTED_STATUS
    assert sorted(p.name for p in snapshot.glob("*.pth")) == ["checkpoint_2.pth"]
    monkeypatch.delenv("OCNET_FAULT_SIGNAL_AT")
    run_main(cli(data, snapshot, *argv, "--recompute", "--resume"))
    assert_same_weights(final_weights(snapshot, 4), final_weights(tmp_path / "plain", 4))
    assert metrics(snapshot) == metrics(tmp_path / "plain")


def test_recompute_refuses_compile(data, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_main(cli(data, tmp_path / "snap", "--recompute", "--compile"))
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "train.py: error: --recompute does not work with --compile; choose one"
    )
