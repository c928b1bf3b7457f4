"""A 2-process torchrun run (gloo, CPU) ends with the weights of the 1-process run with the same global batch.

Dropout, drop-path and augmentation are off and the only BatchNorm layers (in the frozen mini-PointNet) stay in eval
mode: point_bert_tiny's head has no BatchNorm (SyncBatchNorm does not run on CPU).
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

CFG = """\
_base_: [adapters/clora.yaml]
dataset: {name: synthetic, num_samples: 16, num_points: 64, num_classes: 3}
model: {name: point_bert_tiny, head_dropout: 0.0, drop_path_rate: 0.0}
data: {num_points: 64, batch_size: 8, eval_batch_size: 16, augmentation: none}
optim: {lr: 0.01}
schedule: {epochs: 2, warmup_epochs: 0}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Linear probing (the segmentation head trains): at step 0 CLoRA's Q gets a ~0 gradient (B = 0) whose sign AdamW
# turns into a whole lr step, so float summation order alone would decide it; the head compares real updates.
SEG_CFG = """\
_base_: [adapters/linear.yaml]
task: part_segmentation
dataset: {{name: synthetic_parts, num_samples: 24, num_points: 96, num_categories: 3}}
model: {{name: point_mae_tiny, drop_path_rate: 0.0, head_dropout: 0.0}}
data: {{num_points: 96, batch_size: 8, eval_batch_size: 8, augmentation: none, val_fraction: 0.2}}
optim: {{lr: 0.01}}
schedule: {{epochs: 2, warmup_epochs: 0}}
"""


@pytest.mark.parametrize("tool", ["finetune", "segment"])
def test_two_process_torchrun_matches_single_process(tool, tmp_path):
    """Classification: identical weights. Segmentation: the head's BatchNorm normalises the global batch in both
    (issue 19: it used to normalise each process's half), so parameters and losses agree with the same batch."""
    cfg = tmp_path / "ddp.yaml"
    cfg.write_text(CFG if tool == "finetune" else SEG_CFG.format())
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    extra: list = []
    module = f"pointclora.cli.{tool}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    one = subprocess.run([sys.executable, "-m", module, "--cfg", str(cfg), "--output", str(single), "--device", "cpu",
                          "--quiet", *extra], env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert one.returncode == 0, one.stderr[-3000:]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           "-m", module, "--cfg", str(cfg), "--output", str(ddp), "--device", "cpu", "--quiet"]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    a = torch.load(single / "checkpoints" / "last.pth", weights_only=True)
    b = torch.load(ddp / "checkpoints" / "last.pth", weights_only=True)
    assert b["epoch"] == a["epoch"] and b["global_step"] == a["global_step"] > 0
    assert len(b["rng"]) == 2  # each process's RNG state is kept for resume
    buffers = {k for k in a["model"] if "running_" in k or "num_batches_tracked" in k}
    agree, total = 0, 0
    for k, v in a["model"].items():
        close = torch.isclose(v.float(), b["model"][k].float(), atol=1e-4, rtol=0)
        if tool == "finetune":
            assert bool(close.all()), k
        elif k not in buffers:  # BN running statistics: each process keeps its own half-batch statistics
            agree, total = agree + int(close.sum()), total + close.numel()
    # Segmentation: AdamW's first step is ~lr * sign(grad); the head's BatchNorm (per-process half batches, one category
    # per half in the label branch) leaves a few gradients at float-noise size, whose sign then flips by summation
    # order. Everything else must agree.
    assert tool == "finetune" or agree / total > 0.99, f"{agree}/{total} elements agree"
    import json

    ha = [json.loads(x) for x in (single / "history.jsonl").read_text().splitlines()]
    hb = [json.loads(x) for x in (ddp / "history.jsonl").read_text().splitlines()]
    assert ha[0]["train_loss"] != ha[1]["train_loss"]  # training moved the model, so equality means something
    for ra, rb in zip(ha, hb):
        assert ra["train_loss"] == pytest.approx(rb["train_loss"], abs=1e-4 if tool == "finetune" else 1e-2)
        if tool == "finetune":
            assert ra["val_acc"] == rb["val_acc"]
    assert json.loads((ddp / "metrics.json").read_text())["world_size"] == 2


# Point-MAE's classification head normalises with BatchNorm. Before issue 19 each process normalised its own half of
# the global batch (different statistics than one process on the whole batch): the 2-process demo trained with a
# higher loss at every epoch. Dropout and drop-path are off, so only a defect can make the losses differ.
BN_CFG = """\
_base_: [adapters/clora.yaml]
dataset: {name: synthetic, num_samples: 24, num_points: 64, num_classes: 3}
model: {name: point_mae_tiny, head_dropout: 0.0, drop_path_rate: 0.0}
data: {num_points: 64, batch_size: 8, eval_batch_size: 16, augmentation: scale_translate}
optim: {lr: 0.01}
schedule: {epochs: 2, warmup_epochs: 1}
"""


def test_two_processes_match_one_with_batchnorm_head(tmp_path):
    import json

    cfg = tmp_path / "bn.yaml"
    cfg.write_text(BN_CFG)
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    base = ["-m", "pointclora.cli.finetune", "--cfg", str(cfg), "--device", "cpu", "--quiet"]
    one = subprocess.run([sys.executable, *base, "--output", str(single)], env=env, capture_output=True, text=True,
                         timeout=300)  # fmt: skip
    assert one.returncode == 0, one.stderr[-3000:]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), *base, "--output", str(ddp)]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Warning" not in proc.stderr, proc.stderr[-2000:]  # no deprecation noise from the global BatchNorm
    assert "world size 2" in (ddp / "log.txt").read_text().splitlines()[0]
    assert "world size 1" in (single / "log.txt").read_text().splitlines()[0]
    ha = [json.loads(x) for x in (single / "history.jsonl").read_text().splitlines()]
    hb = [json.loads(x) for x in (ddp / "history.jsonl").read_text().splitlines()]
    assert len(ha) == len(hb) == 2 and ha[0]["train_loss"] != ha[1]["train_loss"]
    for ra, rb in zip(ha, hb):
        assert rb["train_loss"] == pytest.approx(ra["train_loss"], abs=1e-5)
        assert rb["val_acc"] == ra["val_acc"]
    a = torch.load(single / "checkpoints" / "last.pth", weights_only=True)["model"]
    b = torch.load(ddp / "checkpoints" / "last.pth", weights_only=True)["model"]
    # The head's BatchNorm running statistics included: they saw the whole global batch. Not compared: the biases of
    # the Linear layers right before a BatchNorm, whose exact gradient is 0 (BatchNorm subtracts them back out):
    # AdamW turns their float-noise gradient into whole lr steps whose sign the summation order decides (and the
    # running means, which carry those biases).
    pairs = ((0, "bias"), (4, "bias"), (1, "running_mean"), (5, "running_mean"))
    noise = {f"cls_head_finetune.{i}.{n}" for i, n in pairs}
    bad = {k for k, v in a.items() if not torch.allclose(v.float(), b[k].float(), atol=1e-4)}
    assert bad <= noise, bad
    tracked = "cls_head_finetune.1.num_batches_tracked"
    assert len(a) > 30 and torch.equal(a[tracked], b[tracked])
