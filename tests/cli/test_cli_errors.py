"""Every user mistake through the installed console commands: one line ``error: ...``, exit code 2, no traceback."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
from task_configs import task_cfg  # noqa: E402

from pointclora.config import dump_config  # noqa: E402
from pointclora.engine.trainer import Trainer  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _command(tool: str) -> list:
    exe = BIN / f"pointclora-{tool}"
    if exe.exists():
        return [str(exe)]
    found = shutil.which(f"pointclora-{tool}")
    assert found, f"console command pointclora-{tool} is not installed (pip install -e .)"
    return [found]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A finished tiny run, its config, a foreign torch file, a text file, a broken YAML, a broken point cloud."""
    d = tmp_path_factory.mktemp("bad")
    cfg = task_cfg("classification", d, epochs=1)
    (d / "tiny.yaml").write_text(dump_config(cfg))
    Trainer(cfg, output=d / "run", quiet=True).fit()
    torch.save({"optimizer_state": torch.zeros(3)}, d / "unrelated.pth")
    (d / "notes.txt").write_text("not a checkpoint\n")
    (d / "broken.yaml").write_text("model: {name: [unclosed\n")
    (d / "garbage.ply").write_bytes(b"ply\nformat nonsense\n\x00\x01")
    import numpy as np

    np.save(d / "ok.npy", np.random.default_rng(0).normal(size=(200, 3)).astype(np.float32))
    seg = task_cfg("part_segmentation", d, epochs=1)
    (d / "seg.yaml").write_text(dump_config(seg))
    return d


CASES = [
    # (tool, arguments, words the message must contain)
    ("finetune", ["--cfg", "{d}/missing.yaml"], "not found"),
    ("finetune", ["--cfg", "{d}/broken.yaml"], "invalid YAML"),
    ("finetune", ["--cfg", "{d}/tiny.yaml", "--set", "optim.lrr=1"], "did you mean 'lr'"),
    ("finetune", ["--cfg", "{d}/tiny.yaml", "--set", "dataset.num_clases=3"], "did you mean 'num_classes'"),
    ("finetune", ["--cfg", "{d}/tiny.yaml", "--set", "peft.rr=3"], "did you mean 'r'"),
    ("finetune", ["--cfg", "{d}/tiny.yaml", "--ckpt", "{d}/notes.txt", "--output", "{o}"], "notes.txt"),
    ("finetune", ["--cfg", "{d}/tiny.yaml", "--ckpt", "{d}/unrelated.pth", "--output", "{o}"], "no key matches"),
    ("finetune", ["--cfg", "{d}/tiny.yaml", "--ckpt", "{d}/nothere.pth", "--output", "{o}"], "not found"),
    ("finetune", ["--cfg", "{d}/tiny.yaml", "--resume"], "--resume needs --output"),
    ("finetune", ["--cfg", "{d}/tiny.yaml", "--resume", "--output", "{o}"], "no checkpoint"),
    ("finetune", ["--cfg", "{d}/tiny.yaml", "--resume", "--output", "{d}/run", "--epochs", "5"],
     "schedule.epochs: 1 -> 5"),
    ("finetune", ["--cfg", "{d}/tiny.yaml", "--resume", "--output", "{d}/run", "--peft", "lora"], "peft.method"),
    ("finetune", ["--cfg", "{d}/tiny.yaml", "--output", "{o}", "--set", "data.batch_size=64"],
     "fewer than data.batch_size"),
    ("finetune", ["--cfg", "{d}/tiny.yaml", "--output", "{o}", "--set", "data.val_split=bogus"], "val_split"),
    ("finetune", ["--cfg", "{d}/tiny.yaml", "--peft", "bogus"], "invalid choice"),
    ("finetune", ["--cfg", "{d}/tiny.yaml", "--output", "{d}/run"], "already holds a run"),
    ("segment", ["--cfg", "{d}/seg.yaml", "--output", "{o}", "--set", "model.name=point_bert_s"],
     "no segmentation variant"),
    ("pretrain", ["--cfg", "{d}/tiny.yaml", "--output", "{o}", "--set", "pretrain.mask_ratoi=0.5"], "mask_ratio"),
    ("evaluate", ["{d}/nowhere"], "does not exist"),
    ("evaluate", ["{d}/run", "--ckpt", "{d}/nothere.pth"], "not found"),
    ("evaluate", ["{d}/run", "--split", "bogus"], "bogus"),
    ("predict", ["{d}/missing.ply", "--weights", "{d}/run"], "missing.ply"),
    ("predict", ["{d}/garbage.ply", "--weights", "{d}/run"], "garbage.ply"),
    ("predict", ["{d}/ok.npy", "--weights", "{d}/run", "--png", "{o}.png"], "--png"),
    ("fewshot", ["--cfg", "{d}/tiny.yaml", "--episodes", "{d}/no_episodes", "--output", "{o}"], "episode"),
]


# One case per tool runs its installed console command in a process of its own (the entry point, the imports and
# the whole stderr, warnings included); the others call the same ``main`` in-process, where any warning fails the
# case as it would print a second stderr line there. Each process start costs ~2.5 s of imports: 25 of them were
# the slowest file of the suite.
IN_PROCESS = {i for i, c in enumerate(CASES) if any(d[0] == c[0] for d in CASES[:i])}


def _in_process(tool: str, argv: list, capsys) -> tuple:
    import importlib
    import warnings

    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            code = importlib.import_module(f"pointclora.cli.{tool}").main(argv)
        except SystemExit as exit_:  # argparse's own refusals
            code = exit_.code
    out = capsys.readouterr()
    stderr = out.err + "".join(f"{w.filename}:{w.lineno}: {w.category.__name__}: {w.message}\n" for w in caught)
    return code, out.out, stderr


@pytest.mark.parametrize("index,tool,args,words", [(i, *c) for i, c in enumerate(CASES)],
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])  # fmt: skip
def test_bad_input_is_one_error_line(index, tool, args, words, files, tmp_path, capsys):
    argv = [a.format(d=files, o=tmp_path / "out") for a in args]
    if index in IN_PROCESS:
        code, stdout, stderr = _in_process(tool, argv, capsys)
    else:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
        proc = subprocess.run(_command(tool) + argv, capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
        code, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    err_lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert code == 2, stderr[-2000:]
    assert "Traceback" not in stderr and "Traceback" not in stdout
    assert len(err_lines) == 1 and err_lines[0].startswith("error: "), stderr
    assert words in err_lines[0], err_lines[0]
    assert not (tmp_path / "out").exists()  # nothing half-made is left behind
