"""Fine-tune a pre-trained point-cloud transformer with CLoRA (or LoRA, full, linear probing).

Examples::

    python tools/finetune.py --cfg demo.yaml                          # the embedded demo, no downloads
    python tools/finetune.py --cfg scanobjectnn.yaml --ckpt checkpoints/pretrain.pth --peft clora
    python tools/finetune.py --cfg modelnet40.yaml --set optim.lr=1e-3 data.batch_size=16 --seeds 0 1 2
    python tools/finetune.py --cfg demo.yaml --output runs/x --resume       # continue a killed run exactly
    torchrun --nproc_per_node 2 tools/finetune.py --cfg scanobjectnn.yaml   # DDP (gloo on CPU, NCCL on GPU)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from ..config import ConfigError, apply_overrides, load_config, load_yaml, resolve_config_path

__all__ = ["main", "build_parser", "config_from_args"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pointclora-finetune", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--cfg", required=True, help="experiment config: a path or a bare name found in configs/")
    p.add_argument("--ckpt", help="pre-trained backbone checkpoint (sets model.checkpoint)")
    p.add_argument("--peft", choices=["clora", "lora", "full", "linear", "none"],
                   help="adapter method (replaces the config's peft section with configs/adapters/<method>.yaml)")
    p.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="override config keys, e.g. --set optim.lr=1e-3 data.batch_size=16")
    p.add_argument("--output", help="run directory (default runs/<config>/<method>-seed<seed>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --output from its last checkpoint")
    p.add_argument("--seed", type=int, help="random seed (sets train.seed)")
    p.add_argument("--seeds", type=int, nargs="+", help="run once per seed and report mean ± std")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N (sets train.device)")
    p.add_argument("--amp", action="store_true", help="mixed precision: bf16 on CPU, fp16 (GradScaler) on CUDA")
    p.add_argument("--epochs", type=int, help="sets schedule.epochs")
    p.add_argument("--data-root", help="dataset folder (overrides the dataset config's root)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    return p


def _adapter_section(method: str) -> Dict[str, Any]:
    try:
        data = load_yaml(resolve_config_path(f"adapters/{method}.yaml"))
        return dict(data.get("peft", {"method": method}))
    except ConfigError:
        return {"method": method}


def load_cli_config(
    cfg_path: str,
    overrides: Sequence[str] = (),
    method: Optional[str] = None,
    ckpt: Optional[str] = None,
    epochs: Optional[int] = None,
) -> Dict[str, Any]:
    """What every training tool does with its flags: load ``cfg_path`` (+ bases), swap in ``method``'s own adapter
    defaults (not the old method's options), set the backbone checkpoint and epochs, then apply ``--set`` overrides
    (checked against the schema)."""
    cfg = load_config(cfg_path)
    if method and method != cfg["peft"].get("method"):
        cfg["peft"] = _adapter_section(method)
    if ckpt:
        cfg["model"]["checkpoint"] = ckpt
    if epochs is not None:
        cfg["schedule"]["epochs"] = epochs
    return apply_overrides(cfg, overrides)


def config_from_args(args: argparse.Namespace) -> Dict[str, Any]:
    """The resolved config: file (+ bases), then the flags, then ``--set`` overrides (checked against the schema)."""
    cfg = load_cli_config(args.cfg, method=args.peft, ckpt=args.ckpt, epochs=args.epochs)
    if args.seed is not None:
        cfg["train"]["seed"] = args.seed
    if args.device:
        cfg["train"]["device"] = args.device
    if args.amp:
        cfg["train"]["amp"] = True
    return apply_overrides(cfg, args.overrides)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.resume and not args.output:
        print("error: --resume needs --output RUN_DIR (the run to continue)", file=sys.stderr)
        return 2
    try:
        cfg = config_from_args(args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from ..engine.trainer import run_finetune

    try:
        if not args.seeds:
            run_finetune(cfg, output=args.output, resume=args.resume, data_root=args.data_root, quiet=args.quiet)
            return 0
        return _run_seeds(cfg, args)
    except (ConfigError, FileNotFoundError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _run_seeds(cfg: Dict[str, Any], args: argparse.Namespace) -> int:
    """One run per seed in ``<output>/seed<N>``, then the mean ± std table in ``<output>/summary.md``."""
    from ..engine.checkpoint import atomic_write_json, atomic_write_text
    from ..engine.distributed import is_main
    from ..engine.logging import mean_std, seeds_table
    from ..engine.trainer import run_finetune

    root = Path(args.output) if args.output else Path("runs") / str(cfg["name"]) / (
        f"{cfg['peft'].get('method', 'clora')}-seeds-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    runs: List[Dict[str, Any]] = []
    for seed in args.seeds:
        run_dir = root / f"seed{seed}"
        done = run_dir / "metrics.json"
        if args.resume and done.exists():  # finished before the interruption
            runs.append(json.loads(done.read_text()))
            continue
        seed_cfg = {**cfg, "train": {**cfg["train"], "seed": seed}}
        resume = args.resume and (run_dir / "checkpoints" / "last.pth").exists()
        runs.append(run_finetune(seed_cfg, output=run_dir, resume=resume, data_root=args.data_root, quiet=args.quiet))
    if is_main():
        table = seeds_table(runs)
        keys = ("acc", "mean_class_acc", "last_acc", "best_test_acc", "vote_acc")
        summary = {k: {**mean_std([float(r[k]) for r in runs]), "values": [r[k] for r in runs]}
                   for k in keys if all(r.get(k) is not None for r in runs)}  # fmt: skip
        summary.update(seeds=list(args.seeds), selection=runs[0].get("selection"),
                       trainable_params=runs[0].get("trainable_params"), gflops=runs[0].get("gflops"))  # fmt: skip
        atomic_write_json(summary, root / "summary.json")
        atomic_write_text(table + "\n", root / "summary.md")
        print(f"\n{table}\n\nper-seed runs and summary.json in {root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
