"""Latency of the deployed model: eager PyTorch vs ONNX Runtime vs TorchScript, batch 1 and 32, side by side.

    python bench/export.py                                   # point_mae_s (ViT-S, 64 groups), 1,024 points
    python bench/export.py --variant point_mae_mn10 --threads 2

The model is a CLoRA-adapted classifier, merged (what ``tools/export.py`` writes). All three run on the same
random clouds with the same thread count, interleaved round by round (so load on a shared machine hits all alike);
the median over rounds is printed with each runtime's ratio to eager. Parity (max |logit difference|, identical
argmax) is printed beside.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", default="point_mae_s")
    p.add_argument("--num-points", type=int, default=1024)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()

    import numpy as np
    import onnxruntime as ort
    import torch

    from pointclora.deploy import export_model
    from pointclora.models import create_model
    from pointclora.peft import inject_adapters, make_peft_config, merge_and_unload

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = create_model(args.variant, num_classes=40)
    inject_adapters(model, make_peft_config("clora", r=8, num_bases=4))
    with torch.no_grad():
        for q in model.parameters():
            if q.requires_grad:
                q.add_(torch.randn_like(q) * 0.01)
    eager = merge_and_unload(model).eval()  # what a deployment runs in PyTorch
    with tempfile.TemporaryDirectory() as tmp:
        onnx_file = export_model(eager, Path(tmp) / "m.onnx", "onnx", num_points=args.num_points)
        ts_file = export_model(eager, Path(tmp) / "m.pt", "torchscript", num_points=args.num_points)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = args.threads
        opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(str(onnx_file), opts, providers=["CPUExecutionProvider"])
        scripted = torch.jit.load(str(ts_file))
    print(f"{args.variant}, {args.num_points} points, {args.threads} thread(s), torch {torch.__version__}, "
          f"onnxruntime {ort.__version__}; median of {args.rounds} rounds")  # fmt: skip
    print(f"{'batch':>5} {'eager ms':>10} {'ORT ms':>10} {'TS ms':>10} {'eager/ORT':>10} {'eager/TS':>10} "
          f"{'max|dlogit| ORT':>16} {'argmax same':>12}")  # fmt: skip
    gen = torch.Generator().manual_seed(1)
    for batch in args.batches:
        pts = torch.rand(batch, args.num_points, 3, generator=gen) * 2 - 1
        feed = {"points": pts.numpy()}
        runs = {
            "eager": lambda: eager(pts),
            "ort": lambda: sess.run(None, feed)[0],
            "ts": lambda: scripted(pts),
        }
        times = {k: [] for k in runs}
        with torch.no_grad():
            for fn in runs.values():  # warm-up (allocations, numba compile, graph optimisation)
                fn()
            for _ in range(args.rounds):
                for name, fn in runs.items():
                    t0 = time.perf_counter()
                    fn()
                    times[name].append(time.perf_counter() - t0)
            ref = eager(pts).numpy()
        got = sess.run(None, feed)[0]
        med = {k: 1000 * statistics.median(v) for k, v in times.items()}
        print(f"{batch:>5} {med['eager']:>10.1f} {med['ort']:>10.1f} {med['ts']:>10.1f} "
              f"{med['eager'] / med['ort']:>10.2f} {med['eager'] / med['ts']:>10.2f} "
              f"{np.abs(got - ref).max():>16.2e} {str(bool((got.argmax(1) == ref.argmax(1)).all())):>12}")  # fmt: skip


if __name__ == "__main__":
    main()
