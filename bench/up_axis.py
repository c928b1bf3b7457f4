"""The up-axis effect, side by side in one run: a classifier fine-tuned on z-up ModelNet10 PCDs scores y-up
ModelNet40-resampled shapes of the same ten classes as they are, and turned y -> z (``predict --up y``).

    python bench/up_axis.py --weights RUN [--data ../shared/data/modelnet40_normal_resampled] [--list present_test.txt]

Scores every listed shape whose class the model knows (``present_test.txt``: the official test ids present here,
none of which is in the ModelNet10 PCD folders, which hold the official train split only). Prints the correct counts
both ways and their ratio.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pointclora.api import load_weights
from pointclora.cli.predict import predict_files


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", required=True, help="a classification run trained on z-up files")
    p.add_argument("--data", default="../shared/data/modelnet40_normal_resampled")
    p.add_argument("--list", default="present_test.txt", help="ids to score (in --data)")
    p.add_argument("--json", help="also write the counts here")
    a = p.parse_args()
    data = Path(a.data)
    run = load_weights(a.weights, device="cpu")
    classes = list(run.task.meta["classes"])
    frame = run.manifest["config"]["data"].get("up_axis")
    ids = [s.strip() for s in (data / a.list).read_text().split() if s.strip()]
    files, truth = [], []
    for shape_id in ids:
        cls = shape_id.rsplit("_", 1)[0]
        if cls in classes:
            files.append(str(data / cls / f"{shape_id}.txt.gz"))
            truth.append(cls)
    out = {"run": str(a.weights), "model_up_axis": frame, "shapes": len(files), "classes": sorted(set(truth))}
    for name, up in (("as stored (y-up files, no turn)", "z"), ("turned y -> z (--up y)", "y")):
        preds = predict_files(files, a.weights, topk=1, device="cpu", up=up)
        correct = sum(r["predictions"][0]["label"] == t for r, t in zip(preds, truth))
        out[name] = correct
        no_bathtub = [(r, t) for r, t in zip(preds, truth) if t != "bathtub"]
        out[name + ", without bathtub"] = f"{sum(r['predictions'][0]['label'] == t for r, t in no_bathtub)}/" \
                                          f"{len(no_bathtub)}"  # fmt: skip
    keys = [k for k in out if k.startswith(("as stored", "turned"))]
    print(f"model {a.weights} (works {frame}-up), {len(files)} y-up shapes of {len(out['classes'])} classes")
    for k in keys:
        v = out[k]
        print(f"  {k}: {v if isinstance(v, str) else f'{v}/{len(files)} ({100 * v / len(files):.1f} %)'}")
    base, turned = out[keys[0]], out[keys[2]]
    print(f"  turned / as stored: {turned / max(base, 1):.2f}x")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
