"""Recreate the fixed ModelNet10 held-out split used by the pre-training and learning benchmarks (issue 12).

``python bench/splits.py [--data ../shared/data] [--out /work/exp/splits]`` writes symlink folders (no data is copied)::

    <out>/mn10_heldout/train/<class>/<file>.pcd   80 % of each class of modelnet10_pcd/<class>/train (pre-training
                                                  and fine-tuning may use these)
    <out>/mn10_heldout/test/<class>/<file>.pcd    20 % of each class, seed 0: the report split, never pre-trained on
    <out>/mn10_heldout/split.json                 the file lists

``PointCloudFolder(root=<out>/mn10_heldout, split="train"|"test")`` reads them (``<split>/<class>/`` layout).
The choice depends only on the sorted file names and the seed, so every machine gets the same split.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

HELDOUT_FRACTION = 0.2
HELDOUT_SEED = 0


def default_data_root() -> Path:
    return Path(os.environ.get("POINTCLORA_REAL_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


def heldout_split(
    mn10_root: Path, fraction: float = HELDOUT_FRACTION, seed: int = HELDOUT_SEED
) -> Dict[str, Dict[str, List[str]]]:
    """``{"train": {class: [file names]}, "test": {...}}``: per class ``round(n * fraction)`` files held out."""
    out: Dict[str, Dict[str, List[str]]] = {"train": {}, "test": {}}
    classes = sorted(d.name for d in mn10_root.iterdir() if (d / "train").is_dir())
    if not classes:
        raise FileNotFoundError(f"{mn10_root}: expected <class>/train/*.pcd folders (modelnet10_pcd)")
    for ci, name in enumerate(classes):
        files = sorted(p.name for p in (mn10_root / name / "train").iterdir() if p.suffix == ".pcd")
        perm = np.random.default_rng([seed, ci]).permutation(len(files))
        n_test = int(round(len(files) * fraction))
        test = set(perm[:n_test].tolist())
        out["test"][name] = [f for i, f in enumerate(files) if i in test]
        out["train"][name] = [f for i, f in enumerate(files) if i not in test]
    return out


def write_split(data_root: Path, out: Path) -> Path:
    mn10 = data_root / "modelnet10_pcd"
    split = heldout_split(mn10)
    root = out / "mn10_heldout"
    for part, per_class in split.items():
        for name, files in per_class.items():
            d = root / part / name
            d.mkdir(parents=True, exist_ok=True)
            for f in files:
                link = d / f
                if not link.exists():
                    link.symlink_to((mn10 / name / "train" / f).resolve())
    (root / "split.json").write_text(
        json.dumps({"fraction": HELDOUT_FRACTION, "seed": HELDOUT_SEED, **split}, indent=1)
    )
    return root


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=default_data_root())
    p.add_argument("--out", type=Path, default=Path("/work/exp/splits"))
    a = p.parse_args(argv)
    try:
        root = write_split(a.data, a.out)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    s = json.loads((root / "split.json").read_text())
    print(f"{root}: train {sum(map(len, s['train'].values()))} / held-out test {sum(map(len, s['test'].values()))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
