"""Memory of N task adapters on one frozen backbone vs N merged models, measured side by side.

    python bench/multi_adapter_memory.py                       # point_mae_s (ViT-S), N = 4, CLoRA r=8 p=4
    python bench/multi_adapter_memory.py --variant point_mae_mn10 --n 8 --method lora

Each of the N adapters is a different task (its own number of classes, so its own head). Two figures per setup:
- tensor bytes: every distinct tensor storage held (exact, independent of the allocator);
- process RSS growth: each setup runs in a fresh subprocess that reports its resident memory after building the
  models minus before (freed heap handed back with malloc_trim first, in both setups alike).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _classes(i: int) -> int:
    return 10 + 5 * i  # every task has its own head size


def _make_adapters(variant: str, method: str, n: int, folder: Path) -> None:
    import torch

    from pointclora.models import create_model
    from pointclora.peft import inject_adapters, make_peft_config, save_adapter

    for i in range(n):
        torch.manual_seed(0)  # the same backbone for every task
        model = create_model(variant, num_classes=_classes(i))
        kwargs = {"r": 8, "num_bases": 4} if method == "clora" else {"r": 8}
        inject_adapters(model, make_peft_config(method, **kwargs))
        with torch.no_grad():
            for p in model.parameters():
                if p.requires_grad:
                    p.add_(torch.randn_like(p) * 0.01)
        save_adapter(model, folder / f"task{i}")


def _storage_bytes(tensors) -> int:
    seen = {}
    for t in tensors:
        s = t.untyped_storage()
        seen[s.data_ptr()] = s.nbytes()
    return sum(seen.values())


def _child(setup: str, variant: str, n: int, folder: str) -> None:
    import gc

    import psutil
    import torch

    from pointclora.models import create_model
    from pointclora.peft import load_adapter, merge_and_unload
    from pointclora.peft.multi import adapter_tensors

    proc = psutil.Process()
    gc.collect()
    _trim()
    before = proc.memory_info().rss
    tensors = []
    keep = []
    if setup == "shared":
        torch.manual_seed(0)
        model = create_model(variant, num_classes=_classes(0)).eval()
        for i in range(n):
            load_adapter(model, Path(folder) / f"task{i}", adapter_name=f"task{i}")
        keep.append(model)
        tensors += list(model.state_dict().values())
        for i in range(n):
            tensors += adapter_tensors(model, f"task{i}")
    else:
        for i in range(n):
            torch.manual_seed(0)
            model = create_model(variant, num_classes=_classes(i))
            load_adapter(model, Path(folder) / f"task{i}")
            keep.append(merge_and_unload(model).eval())
            tensors += list(keep[-1].state_dict().values())
    gc.collect()
    _trim()
    print(json.dumps({"rss": proc.memory_info().rss - before, "bytes": _storage_bytes(tensors)}))


def _trim() -> None:
    """Hand freed heap back to the OS (glibc keeps it after the transient copies of loading), so RSS counts what
    is live in both setups alike."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc
        pass


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", default="point_mae_s")
    p.add_argument("--method", default="clora", choices=["clora", "lora"])
    p.add_argument("--n", type=int, default=4)
    p.add_argument("--_child", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._child:
        _child(args._child[0], args.variant, args.n, args._child[1])
        return
    with tempfile.TemporaryDirectory() as tmp:
        _make_adapters(args.variant, args.method, args.n, Path(tmp))
        out = {}
        for setup in ("shared", "merged"):
            cmd = [sys.executable, __file__, "--variant", args.variant, "--n", str(args.n),
                   "--_child", setup, tmp, "-"]  # fmt: skip
            res = subprocess.run(cmd, capture_output=True, text=True, check=True)
            out[setup] = json.loads(res.stdout.strip().splitlines()[-1])
    mib = 1 << 20
    s, m = out["shared"], out["merged"]
    print(f"{args.n} {args.method} adapters (r=8) on {args.variant}, one task head each")
    print(f"{'setup':<34}{'tensor MiB':>12}{'RSS growth MiB':>16}")
    print(f"{'1 backbone + N adapters':<34}{s['bytes'] / mib:>12.1f}{s['rss'] / mib:>16.1f}")
    print(f"{'N merged models':<34}{m['bytes'] / mib:>12.1f}{m['rss'] / mib:>16.1f}")
    print(f"{'ratio merged / shared':<34}{m['bytes'] / s['bytes']:>12.2f}{m['rss'] / max(s['rss'], 1):>16.2f}")


if __name__ == "__main__":
    main()
