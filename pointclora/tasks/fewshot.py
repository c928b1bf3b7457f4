"""The few-shot benchmark, a driver over the classification task (``tools/fewshot.py``).

Every (way, shot, fold) episode is fine-tuned with :class:`~pointclora.engine.trainer.Trainer` on the episode's support
set and scored on its query set. Episodes come from the official ``{way}way{shot}shot/{fold}.pkl`` files when the
config's dataset is ``ModelNetFewShot`` (its ``root``), or are generated once with a seed from any labelled dataset
(``PointCloudFolder``, ModelNet40, ...) into ``<output>/episodes`` (:func:`generate_fewshot_episodes`; queries come
from the dataset's test split when it has one, else from shapes disjoint from the supports).

Protocol (Point-MAE / Point-BERT, DATA_FORMATS.md §4.2): episodes have no validation split, so the reported number
per episode is the best-epoch accuracy on its query set (``best_test_acc``), and each setting is summarised as
mean ± std over its folds. The std is the population std (``ddof=0``, as the field's ``parse_test_res.py``); the JSON
also records the sample std.

Interruptions: each finished episode writes ``<output>/<way>way<shot>shot/fold<k>/result.json`` (atomically); a
rerun skips those, and an episode killed mid-training resumes from its own ``run/checkpoints/last.pth``.
"""

from __future__ import annotations

import copy
import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

__all__ = ["run_fewshot", "aggregate_results", "format_fewshot_table", "episode_dir", "default_runner", "fold_ids"]

#: ``runner(cfg, datasets, run_dir, resume) -> metrics`` (run_finetune's metrics dict; ``best_test_acc`` is used).
Runner = Callable[[Dict[str, Any], Dict[str, Any], Path, bool], Mapping[str, Any]]


def episode_dir(output: Path, way: int, shot: int, fold: int) -> Path:
    return Path(output) / f"{way}way{shot}shot" / f"fold{fold}"


def setting_key(way: int, shot: int) -> str:
    return f"{way}way{shot}shot"


def default_runner(cfg: Dict[str, Any], datasets: Dict[str, Any], run_dir: Path, resume: bool) -> Mapping[str, Any]:
    """One episode: the classification task on the episode's datasets (the backbone is ``model.checkpoint``)."""
    from ..engine.trainer import Trainer, as_task_data
    from .classification import ClassificationTask

    # Each episode's lines go to its log.txt only: the driver prints one line per episode and the summary table.
    return Trainer(ClassificationTask(cfg), cfg, output=run_dir, resume=resume, data=as_task_data(datasets),
                   quiet=True, log=lambda _msg: None).fit()  # fmt: skip


def _episode_frame(cfg: Mapping[str, Any]) -> Tuple[Optional[str], Optional[str]]:
    """``(the run's up axis, the episodes' files' up axis)``: episodes keep the axis of the shapes they were drawn
    from (official: ModelNet40, y-up; generated: the config's dataset); clouds are turned into the backbone's (#19)."""
    from ..datasets.up_axis import dataset_up_axis
    from .up_frame import backbone_up_axis

    files = dataset_up_axis(cfg.get("dataset") or {"name": "modelnet_fewshot"})
    return (cfg.get("data") or {}).get("up_axis") or backbone_up_axis(cfg) or files, files


def _episode_datasets(root: Path, way: int, shot: int, fold: int, cfg: Mapping[str, Any]) -> Dict[str, Any]:
    from ..datasets.fewshot import ModelNetFewShot
    from ..datasets.transforms import eval_transforms, train_transforms
    from .classification import ClassificationTask
    from .up_frame import with_up_axis

    data = cfg.get("data") or {}
    n = ClassificationTask(cfg).num_points
    extra = {k: v for k, v in (cfg.get("dataset") or {}).items() if k in ("use_normals", "shape_names")}
    frame, files = _episode_frame(cfg)
    if isinstance(cfg.get("data"), dict):
        cfg["data"]["up_axis"] = frame
    train = ModelNetFewShot(
        root,
        way,
        shot,
        fold,
        "train",
        transform=with_up_axis(train_transforms(n, data.get("augmentation", "scale_translate")), frame, files),
        **extra,
    )
    test = ModelNetFewShot(root, way, shot, fold, "test", transform=with_up_axis(eval_transforms(n), frame, files),
                           **extra)  # fmt: skip
    # No validation split in the protocol: selection on the query set, labelled "test (field protocol)".
    return {
        "train": train,
        "val": test,
        "test": test,
        "classes": list(train.classes),
        "val_source": "test (field protocol)",
    }


def prepare_episodes(
    cfg: Mapping[str, Any],
    ways: Sequence[int],
    shots: Sequence[int],
    folds: Sequence[int],
    output: Path,
    seed: int = 0,
    episodes_root: Optional[str] = None,
    data_root: Optional[str] = None,
    log: Callable[[str], None] = print,
    num_query: int = 20,
) -> Tuple[Path, str]:
    """Where the episode files live, and a sentence saying where they came from.

    ``episodes_root`` (or a ``ModelNetFewShot`` dataset's ``root``) holding every needed file -> used as is.
    Otherwise missing episodes are generated with ``seed`` from ``cfg["dataset"]`` into ``<output>/episodes``.
    """
    from ..datasets.fewshot import episode_path

    dcfg = dict(cfg.get("dataset") or {})
    if data_root:
        dcfg["root"] = data_root
    is_fewshot = str(dcfg.get("name", "")).lower() in ("modelnetfewshot", "modelnet_fewshot", "fewshot")
    root = Path(episodes_root) if episodes_root else (Path(dcfg["root"]) if is_fewshot and dcfg.get("root") else None)
    needed = [(w, s, f) for w in ways for s in shots for f in folds]
    if root is not None:
        missing = [episode_path(root, w, s, f) for w, s, f in needed if not episode_path(root, w, s, f).is_file()]
        if not missing:
            return root, f"episode files in {root}"
        if is_fewshot or episodes_root:
            raise FileNotFoundError(
                f"{len(missing)} of {len(needed)} few-shot episode files are missing under {root}, e.g. {missing[0]}; "
                "get the official episodes (ModelNetFewshot.zip of the Point-BERT release, laid out as "
                "<root>/{5way10shot,5way20shot,10way10shot,10way20shot}/{0..9}.pkl; see datasets/README.md), pass "
                "--episodes DIR, or point the config's dataset at a labelled dataset (e.g. a PointCloudFolder) so "
                "episodes are generated with --episode-seed"
            )
    from ..datasets import build_dataset
    from ..datasets.fewshot import generate_fewshot_episodes

    gen_root = Path(output) / "episodes"
    todo = [(w, s, f) for w, s, f in needed if not episode_path(gen_root, w, s, f).is_file()]
    if todo:
        support = build_dataset(dcfg, "train", transform=None)
        try:
            query = build_dataset(dcfg, "test", transform=None)
        except (FileNotFoundError, ValueError, KeyError):
            query = None  # queries then come from the training shapes, disjoint from the supports
        log(
            f"[fewshot] generating {len(todo)} episodes (seed {seed}) from {dcfg.get('name')} at {dcfg.get('root')} "
            f"-> {gen_root}"
        )
        for w in ways:
            for s in shots:
                fs = [f for (ww, ss, f) in todo if ww == w and ss == s]
                if fs:
                    generate_fewshot_episodes(
                        support,
                        gen_root,
                        ways=[w],
                        shots=[s],
                        folds=fs,
                        seed=seed,
                        num_query=num_query,
                        query_dataset=query,
                    )
    return gen_root, f"episodes generated with seed {seed} from {dcfg.get('name')} ({dcfg.get('root')})"


def _read_result(path: Path) -> Optional[Dict[str, Any]]:
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # absent or torn (cannot happen with atomic writes, but a hand-edited file might): rerun
    return result if isinstance(result, dict) and isinstance(result.get("acc"), (int, float)) else None


def aggregate_results(
    results: Sequence[Mapping[str, Any]], ways: Sequence[int], shots: Sequence[int], folds: Sequence[int]
) -> Dict[str, Any]:
    """Per setting: the fold accuracies, mean, population std (ddof 0), sample std (ddof 1), completeness."""
    out: Dict[str, Any] = {}
    for w in ways:
        for s in shots:
            rows = sorted((r for r in results if r["way"] == w and r["shot"] == s), key=lambda r: r["fold"])
            accs = [float(r["acc"]) for r in rows]
            n = len(accs)
            mean = sum(accs) / n if n else float("nan")
            pop = math.sqrt(sum((a - mean) ** 2 for a in accs) / n) if n else float("nan")
            sample = math.sqrt(sum((a - mean) ** 2 for a in accs) / (n - 1)) if n > 1 else 0.0 if n else float("nan")
            out[setting_key(w, s)] = {
                "way": w,
                "shot": s,
                "folds": [r["fold"] for r in rows],
                "accs": accs,
                "mean": mean,
                "std": pop,
                "std_sample": sample,
                "num_folds": n,
                "complete": n == len(folds),
            }
    return out


def format_fewshot_table(summary: Mapping[str, Any], label: str = "method") -> str:
    """Paper-style Markdown: one column per setting, ``mean ± std`` (and ``k/n folds`` while incomplete)."""
    settings = list(summary["settings"].values())
    header = [label] + [f"{s['way']}-way {s['shot']}-shot" for s in settings]
    cells = []
    for s in settings:
        if not s["num_folds"]:
            cells.append("-")
            continue
        cell = f"{s['mean']:.1f} ± {s['std']:.1f}"
        if not s["complete"]:
            cell += f" ({s['num_folds']}/{summary['num_folds']} folds)"
        cells.append(cell)
    return "\n".join(
        [
            "| " + " | ".join(header) + " |",
            "|" + "|".join("---" for _ in header) + "|",
            "| " + " | ".join([summary.get("method", "-")] + cells) + " |",
        ]
    )


def run_fewshot(
    cfg: Mapping[str, Any],
    ways: Sequence[int] = (5, 10),
    shots: Sequence[int] = (10, 20),
    folds: Sequence[int] = tuple(range(10)),
    output: Optional[str] = None,
    seed: int = 0,
    episodes_root: Optional[str] = None,
    data_root: Optional[str] = None,
    runner: Optional[Runner] = None,
    log: Callable[[str], None] = print,
    num_query: int = 20,
) -> Dict[str, Any]:
    """Run (or finish) every episode; returns the summary also written to ``<output>/summary.json``.

    Args:
        cfg: resolved config (the fine-tuning sections; ``dataset`` names the episodes or the source to generate from).
        ways, shots, folds: the settings; ``folds`` are fold ids.
        output: benchmark directory (default ``runs/<name>/fewshot-<method>``).
        seed: episode-generation seed (only when episodes are generated).
        runner: ``runner(cfg, datasets, run_dir, resume) -> metrics`` (default: :func:`run_finetune`); tests inject a
            stub.
        num_query: query shapes per class in generated episodes (20 in the protocol).
    """
    from ..peft.config import DEFAULT_METHOD
    from ..utils.atomic import atomic_write_json, atomic_write_text

    cfg = json.loads(json.dumps(cfg))
    method = str((cfg.get("peft") or {}).get("method", DEFAULT_METHOD))
    out = Path(output) if output else Path("runs") / str(cfg.get("name") or "fewshot") / f"fewshot-{method}"
    ways, shots, folds = [int(w) for w in ways], [int(s) for s in shots], [int(f) for f in folds]
    if not ways or not shots or not folds:
        raise ValueError(f"need at least one way, shot and fold; got ways={ways} shots={shots} folds={folds}")
    runner = runner or default_runner
    root, source = prepare_episodes(cfg, ways, shots, folds, out, seed, episodes_root, data_root, log, num_query)
    out.mkdir(parents=True, exist_ok=True)  # only once the episodes exist: a failed start leaves no folder
    from .up_frame import rotation_note

    note = rotation_note(*_episode_frame(cfg), what="the episodes' shapes")
    if note:
        log(f"[fewshot] {note}")  # once for every episode
    t0 = time.time()
    settings = [(w, s, f) for w in ways for s in shots for f in folds]
    results = [_run_episode(cfg, root, out, w, s, f, i + 1, len(settings), runner, log)
               for i, (w, s, f) in enumerate(settings)]  # fmt: skip
    summary = {
        "method": method,
        "config": cfg.get("name"),
        "episodes": source,
        "num_folds": len(folds),
        "metric": "best-epoch accuracy on each episode's query set (field protocol), mean ± population std over folds",
        "settings": aggregate_results(results, ways, shots, folds),
        "trainable_params": next((r.get("trainable_params") for r in results if r.get("trainable_params")), None),
        "wall_time_s": round(time.time() - t0, 1),
        "episode_wall_time_s": round(sum(float(r.get("wall_time_s") or 0) for r in results), 1),
    }
    atomic_write_json(summary, out / "summary.json")
    table = format_fewshot_table(summary)
    atomic_write_text(table + "\n", out / "results.md")
    log("\n" + table + f"\n\nresults: {out}")
    return summary


def _run_episode(cfg: Mapping[str, Any], root: Path, out: Path, w: int, s: int, f: int, done: int, total: int,
                 runner: Runner, log: Callable[[str], None]) -> Dict[str, Any]:  # fmt: skip
    """One episode: its result.json when finished before, else fine-tune (resuming a killed run) and record it."""
    from ..utils.atomic import atomic_write_json

    edir = episode_dir(out, w, s, f)
    rpath = edir / "result.json"
    prev = _read_result(rpath)
    if prev is not None:
        log(f"[fewshot] {done}/{total} {w}-way {s}-shot fold {f}: done before ({prev['acc']:.2f}%), skipped")
        return prev
    ecfg = copy.deepcopy(dict(cfg))
    ecfg["name"] = f"{cfg.get('name') or 'fewshot'}-{setting_key(w, s)}-fold{f}"
    ecfg.setdefault("data", {})["val_split"] = "test"
    datasets = _episode_datasets(root, w, s, f, ecfg)
    run_dir = edir / "run"
    resume = (run_dir / "checkpoints" / "last.pth").is_file()
    te = time.time()
    metrics = runner(ecfg, datasets, run_dir, resume)
    acc = metrics.get("best_test_acc", metrics.get("acc"))
    if acc is None:
        raise KeyError(f"runner returned no 'best_test_acc' or 'acc' for {w}-way {s}-shot fold {f}")
    result = {
        "way": w, "shot": s, "fold": f, "acc": float(acc), "last_acc": metrics.get("last_acc"),
        "best_epoch": metrics.get("best_test_epoch", metrics.get("best_epoch")),
        "trainable_params": metrics.get("trainable_params"), "wall_time_s": round(time.time() - te, 1),
        "resumed": resume, "episodes": str(root),
    }  # fmt: skip
    atomic_write_json(result, rpath)
    log(f"[fewshot] {done}/{total} {w}-way {s}-shot fold {f}: {result['acc']:.2f}% ({result['wall_time_s']:.0f}s)")
    return result


def fold_ids(folds: Optional[int], fold_ids: Optional[Sequence[int]]) -> List[int]:
    if fold_ids:
        return [int(f) for f in fold_ids]
    n = 10 if folds is None else int(folds)
    if n < 1:
        raise ValueError(f"--folds must be >= 1, got {n}")
    return list(range(n))
