"""Our part-segmentation variants of the peer PEFT methods against their official code (CPU, fp32 and fp64).

    PYTHONPATH=.:/work/scratch/peers/extra python bench/peers_seg_parity.py --official /work/scratch/peers \
        --shims ../shared/tools/official_cpu_shims --data ../shared/data [--clouds 4] [--markdown]

For each method with an official segmentation model: build it (ShapeNetPart: 16 categories, 50 parts, 128 groups of
32), give every tensor random non-trivial values (``peers_parity.randomize_``), copy them into ours by name (every key
must map, both ways), and compare the per-point log-probabilities of both in eval mode on real part-labelled clouds
(``shapenetpart_cap`` in the official layout: the first ``--npoints`` points of the first ``--clouds`` files, their
own category one-hot) in float32 and float64. The official model returns ``log_softmax``; ours returns raw logits, so
ours is compared after ``log_softmax``. The trainable count applies the official training script's own filter
(``--optimizer_part only_new``: parameter names containing ``cls``). No official code is part of this project: the
script imports it from ``--official``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers_parity import randomize_, rename  # noqa: E402

#: Official segmentation model of each method and how its names map onto ours.
SEG_SPECS: Dict[str, Dict[str, Any]] = {
    "idpt": {
        "repo": "zyh16143998882+ICCV23-IDPT",
        "commit": "bf152f2",
        "module": "prompt_pt3",  # segmentation/models/prompt_pt3.py
        "rename": [
            (r"^blocks\.dgcnn_cls(\d+)\.", r"extensions.idpt.prompts.\1."),
            (r"^prompt_cls_pos$", "extensions.idpt.prompt_cls_pos"),
            (r"^blocks\.blocks\.", "blocks."),
            (r"^(label_conv|propagation_0|convs\d|bns\d)_cls\.", r"\1."),
        ],
        "trainable": ("cls",),  # segmentation/main.py, optimizer_part only_new
    },
    "ppt": {
        "repo": "zsc000722+PPT",
        "commit": "8f87fb8",
        "module": "pt",  # segmentation/models/pt.py
        "rename": [
            (r"^blocks\.(prompt_mlp|prompt_pos_mlp|prompt_all_mlp)\.", r"extensions.ppt.\1."),
            (r"^blocks\.blocks\.", "blocks."),
        ],
        # segmentation/main.py
        "trainable": ("cls", "prompt", "first_conv", "pos_embed", "propagation", "convs", "bns"),
    },
}

_OFFICIAL_TOP = ("models", "logger", "pointnet2_utils", "prompt_pt3", "pt", "provider", "misc", "dataset", "knn")


def import_official_seg(root: Path, spec: Dict[str, Any]) -> Any:
    """The official ``get_model`` class from ``<repo>/segmentation/models/<module>.py``."""
    seg = root / spec["repo"] / "segmentation"
    for name in list(sys.modules):
        if name.split(".")[0] in _OFFICIAL_TOP:
            del sys.modules[name]
    paths = [str(seg / "models"), str(seg)]
    sys.path[:0] = paths
    try:
        return importlib.import_module(spec["module"]).get_model
    finally:
        for p in paths:
            sys.path.remove(p)


def part_clouds(data_root: Path, count: int, npoints: int):
    """``(points (count, npoints, 3) float64, category (count,) int64)`` from the official ShapeNetPart layout."""
    base = data_root / "shapenetpart_cap" / "shapenetcore_partanno_segmentation_benchmark_v0_normal"
    synsets = sorted(line.split()[1] for line in (base / "synsetoffset2category.txt").read_text().splitlines()
                     if line.strip())  # fmt: skip
    names = {line.split()[1]: line.split()[0] for line in (base / "synsetoffset2category.txt").read_text().splitlines()
             if line.strip()}  # fmt: skip
    order = sorted(names, key=lambda s: names[s])  # official category index: categories sorted by name
    files = sorted(f for s in synsets for f in (base / s).glob("*.txt"))[:count]
    clouds, cats = [], []
    for f in files:
        xyz = np.loadtxt(f, usecols=(0, 1, 2), max_rows=npoints)
        clouds.append(torch.from_numpy(xyz))
        cats.append(order.index(f.parent.name))
    return torch.stack(clouds), torch.tensor(cats)


def compare(method: str, official_root: Path, data_root: Path, clouds: int, npoints: int) -> Dict[str, Any]:
    from pointclora.models import create_model
    from pointclora.peft import inject_adapters, make_peft_config

    spec = SEG_SPECS[method]
    torch.manual_seed(0)
    official = import_official_seg(official_root, spec)(50)
    ours = inject_adapters(create_model("point_mae_s_seg", num_classes=50, num_categories=16, skip_near_origin=True),
                           make_peft_config(method))  # fmt: skip
    official.load_state_dict(randomize_(official.state_dict(), seed=1))
    mapped = rename(official.state_dict(), spec["rename"])
    keys = set(ours.state_dict())
    missing, unexpected = sorted(keys - set(mapped)), sorted(set(mapped) - keys)
    if missing or unexpected:
        raise SystemExit(f"{method}: state does not map: ours missing {missing[:8]}, unexpected {unexpected[:8]}")
    ours.load_state_dict(mapped)
    row: Dict[str, Any] = {
        "method": method,
        "commit": spec["commit"],
        "official_trainable": sum(
            p.numel() for n, p in official.named_parameters() if any(k in n for k in spec["trainable"])
        ),  # fmt: skip
        "ours_trainable": sum(p.numel() for p in ours.parameters() if p.requires_grad),
    }
    pts, cat = part_clouds(data_root, clouds, npoints)
    onehot = F.one_hot(cat, 16)
    official.eval()
    ours.eval()
    with torch.no_grad():
        for dtype, key in ((torch.float32, "fp32"), (torch.float64, "fp64")):
            official.to(dtype)
            ours.to(dtype)
            # as the official script feeds it: (B, 3, N) a transposed view, which the model transposes back
            a = official(pts.to(dtype).transpose(1, 2), onehot.to(dtype))  # (B, N, 50) log-probs
            b = F.log_softmax(ours(pts.to(dtype), cat), dim=-1)
            row[f"max_abs_{key}"] = float((a - b).abs().max())
            row[f"scale_{key}"] = float(a.abs().max())
            row[f"argmax_agree_{key}"] = float((a.argmax(-1) == b.argmax(-1)).double().mean())
    return row


def main(argv: List[str] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", type=Path, required=True)
    parser.add_argument("--shims", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--methods", nargs="+", default=sorted(SEG_SPECS), choices=sorted(SEG_SPECS))
    parser.add_argument("--clouds", type=int, default=4)
    parser.add_argument("--npoints", type=int, default=2048)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(args.shims))
    rows = [compare(m, args.official, args.data, args.clouds, args.npoints) for m in args.methods]
    if args.markdown:
        print("| method | official commit | fp32 | fp64 | scale | argmax agree fp32 | trainable official | ours |")
        print("|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['method']} | {r['commit']} | {r['max_abs_fp32']:.1e} | {r['max_abs_fp64']:.1e} | "
                  f"{r['scale_fp32']:.1f} | {r['argmax_agree_fp32']:.4f} | {r['official_trainable']:,} | "
                  f"{r['ours_trainable']:,} |")  # fmt: skip
    else:
        for r in rows:
            print(r)


if __name__ == "__main__":
    main()
