"""Few-shot benchmark: every (way, shot, fold) episode fine-tuned on its support set and scored on its queries.

Examples::

    python tools/fewshot.py --cfg fewshot.yaml --ways 5 10 --shots 10 20 --folds 10
    python tools/fewshot.py --cfg my_folder_fewshot.yaml --seed 0     # episodes generated from any labelled dataset
"""

from __future__ import annotations

import argparse
import json
from typing import Optional, Sequence

from .common import ToolParser, add_config_args, add_training_args, config_from_args, run_cli

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    p = ToolParser(prog="pointclora-fewshot", description=__doc__)  # fmt: skip
    add_config_args(p, "config file or bare name in configs/ (e.g. fewshot.yaml)")
    add_training_args(p)
    p.add_argument("--ways", type=int, nargs="+", default=[5, 10])
    p.add_argument("--shots", type=int, nargs="+", default=[10, 20])
    p.add_argument("--folds", type=int, default=10, help="number of folds: ids 0..N-1 (default 10)")
    p.add_argument("--fold-ids", type=int, nargs="+", help="explicit fold ids instead of --folds")
    p.add_argument("--episodes", help="folder of {way}way{shot}shot/{fold}.pkl episode files")
    p.add_argument("--episode-seed", type=int, default=0, help="episode-generation seed (generated episodes only)")
    return p


def _body(args: argparse.Namespace) -> int:
    from ..api.run import fewshot_episode
    from ..tasks.classification import ClassificationTask
    from ..tasks.fewshot import fold_ids, run_fewshot

    cfg = config_from_args(args, task=ClassificationTask.name)
    summary = run_fewshot(cfg, args.ways, args.shots, fold_ids(args.folds, args.fold_ids), output=args.output,
                          seed=args.episode_seed, episodes_root=args.episodes, data_root=args.data_root,
                          runner=fewshot_episode)  # fmt: skip
    print(json.dumps({k: {kk: v[kk] for kk in ("mean", "std", "num_folds")} for k, v in summary["settings"].items()}))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_cli(_body, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
