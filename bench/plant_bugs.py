"""Plant known one-line bugs, one at a time, in a copy of the package and check that their tests fail.

    python bench/plant_bugs.py            # every bug below; exit 1 if a planted bug passes its tests

The bugs are those that once passed the whole suite (issue 22): the check is that each is now caught, by the tests
named with it. The tree itself is never modified: the package is copied to a temporary folder, the line replaced
there, and pytest run from that folder (so its copy is imported first) on the tree's test files.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# (name, file under pointclora/, the exact line, its planted replacement, the test files that must catch it)
BUGS = [
    (
        "Trainer subtracts the auxiliary loss",
        "engine/trainer.py",
        'loss = step["loss"] + aux',
        'loss = step["loss"] - aux',
        ["tests/engine/test_trainer_loss.py"],
    ),
    (
        "batched FPS breaks ties to the highest index",
        "ops/sampling.py",
        "current = min_dist.argmax(dim=1)",
        "current = (N - 1) - min_dist.flip(1).argmax(dim=1)",
        ["tests/ops/test_sampling.py"],
    ),
    (
        "voting keeps only the last view",
        "engine/evaluation.py",
        "total += model(view).float()",
        "total = model(view).float() * vote",
        ["tests/engine/test_voting.py", "tests/engine/test_evaluation.py"],
    ),
]


def plant(copy: Path, rel: str, line: str, planted: str) -> None:
    path = copy / "pointclora" / rel
    text = path.read_text()
    if text.count(line) != 1:
        raise SystemExit(f"error: pointclora/{rel}: expected the line {line!r} exactly once, found {text.count(line)}")
    path.write_text(text.replace(line, planted))


def main() -> int:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    failures = 0
    with tempfile.TemporaryDirectory(prefix="pointclora_plant_") as tmp:
        for name, rel, line, planted, tests in BUGS:
            copy = Path(tmp) / "tree"
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(ROOT / "pointclora", copy / "pointclora", ignore=shutil.ignore_patterns("__pycache__"))
            plant(copy, rel, line, planted)
            env["PYTHONPATH"] = str(copy)
            files = [str(ROOT / t) for t in tests]
            cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *files]
            proc = subprocess.run(cmd, cwd=copy, env=env, capture_output=True, text=True)
            caught = proc.returncode == 1  # 1: tests failed; anything else (2-5) is a broken run, not a catch
            failures += not caught
            last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr.strip()[-200:]
            print(f"{'caught' if caught else 'MISSED'}: {name} (pointclora/{rel}: {planted}) -> {last}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
