"""Top-k class labels for your own point clouds or meshes.

Examples::

    python tools/predict.py scan.ply chair.off cloud.npy --weights runs/demo/clora-seed0-... --topk 5
    python tools/predict.py data/*.pcd --weights merged.pth --json

Files are read with ``pointclora.datasets.io.read_point_cloud`` (.ply/.pcd/.off/.obj/.npy/.txt/.xyz; meshes are
sampled), centred and scaled to the unit sphere (``--no-normalize`` keeps them as they are), farthest-point
subsampled to the model's ``data.num_points``, and classified; labels are the checkpoint's class names.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Dict, List, Optional, Sequence

import torch

__all__ = ["main", "build_parser", "predict_files"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pointclora-predict", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="point clouds or meshes")
    p.add_argument("--weights", required=True, help="run directory, checkpoint, merged checkpoint or adapter folder")
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--num-points", type=int, help="points fed to the model (default: the config's data.num_points)")
    p.add_argument("--no-normalize", action="store_true", help="do not centre / scale to the unit sphere")
    p.add_argument("--ckpt", help="pre-trained backbone, when the one recorded in the config moved")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    return p


@torch.no_grad()
def predict_files(
    files: Sequence[str],
    weights: str,
    topk: int = 5,
    num_points: Optional[int] = None,
    normalize: bool = True,
    device: str = "auto",
    backbone: Optional[str] = None,
) -> List[Dict[str, Any]]:
    """``[{"file", "predictions": [{"label", "index", "prob"}, ...]}]`` for each file, best first."""
    from ..datasets.base import pc_normalize
    from ..datasets.io import read_point_cloud
    from ..datasets.transforms import eval_transforms
    from ..engine.inference import load_classifier
    from ..utils.device import resolve_device

    dev = resolve_device(device)
    loaded = load_classifier(weights, dev, backbone=backbone)
    n = num_points or int(loaded.config["data"]["num_points"])
    transform = eval_transforms(n)
    k = max(1, min(topk, len(loaded.classes)))
    results = []
    for path in files:
        xyz = read_point_cloud(path, num_points=max(n, 2048))[:, :3].astype("float32")
        if normalize:
            xyz = pc_normalize(xyz).astype("float32")
        points = transform({"points": torch.from_numpy(xyz)})["points"][None].to(dev)
        probs = torch.softmax(loaded.model(points).float(), dim=-1)[0]
        values, idx = probs.topk(k)
        preds = [{"label": loaded.classes[int(i)], "index": int(i), "prob": float(v)} for v, i in zip(values, idx)]
        results.append({"file": str(path), "predictions": preds})
    return results


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from ..config import ConfigError

    try:
        results = predict_files(args.files, args.weights, topk=args.topk, num_points=args.num_points,
                                normalize=not args.no_normalize, device=args.device, backbone=args.ckpt)  # fmt: skip
    except (FileNotFoundError, ConfigError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for r in results:
        if args.json:
            print(json.dumps(r))
            continue
        ranked = ", ".join(f"{p['label']} {100 * p['prob']:.1f}%" for p in r["predictions"])
        print(f"{r['file']}: {ranked}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
