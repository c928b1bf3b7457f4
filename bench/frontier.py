"""The accuracy / trainable-parameter / GFLOP frontier of every method on the shipped backbone (issue 20).

    python bench/splits.py --data ../shared/data --out /work/exp/splits      # once: the held-out split (symlinks)
    OMP_NUM_THREADS=1 nice -n 19 python bench/frontier.py run [--regimes 10pc all 5w10s 10w20s] \
        [--groups grid baseline ablation peer] [--only clora_p4r8 lora_r8 ...]    # resumable; hours of CPU
    python bench/frontier.py static                 # params / GFLOPs on point_mae_mn10 and point_mae_s (no training)
    python bench/frontier.py profile                # train step time + peak memory of every row (point_mae_mn10)
    python bench/frontier.py --combine [--plot docs/images/frontier.png]                # the tables and the figure
    python bench/frontier.py run --variant point_mae_mn10_8x256 --backbone FILE --regimes 10pc   # the larger backbone

Rows (:func:`specs`): CLoRA at (p, r) in ``CLORA_BUDGETS``, LoRA at ``LORA_RANKS``, every peer in ``PEERS`` at its
official setting (widths tied to the 384-wide ViT-S scaled to the backbone, :data:`SCALED`), full, linear, scratch,
and the CLoRA ablations (SADE weight; Q trained / fixed to the identity / no sharing). A method is added by adding its
registry name to ``PEERS`` (or ``BASELINES``); a name not registered in this checkout is skipped and reported missing.

Regimes: ``all`` and ``10pc`` are bench/learning.py's (:func:`learning.build_regime`: the fixed ModelNet10 held-out
split, validation carved from the non-held-out shapes); the lr is chosen on validation with seed 0 by
:func:`pointclora.engine.sweep.run_sweep`, then seeds 1 and 2 run at it. ``5w10s`` / ``10w20s``: few-shot episodes
drawn (seeded per episode) from the non-held-out ModelNet10 train shapes, ``way`` classes, ``shot`` supports and 20
disjoint queries per class; each row at its default budget runs with the lr its ``10pc`` sweep chose (no test-time
choice), and the query accuracy of the last epoch is reported, mean ± std over 10 episodes.

Every finished run is one small JSON record under ``bench/results/frontier/<regime>/<row>/`` (committed; weights and
checkpoints stay in ``--work``). A record is written atomically only when its run finishes, and a killed run resumes
from its checkpoint in ``--work``; a run whose record exists is never rerun, so a fresh checkout resumes from the
committed records alone.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from learning import ArrayDataset, base_config, build_regime  # noqa: E402

from pointclora.utils.atomic import atomic_write_json, atomic_write_text  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "frontier"
#: The backbone the frontier is drawn on by default (``--variant`` picks another registered one, e.g. the larger
#: ``point_mae_mn10_8x256``; its records go to ``frontier_<variant>`` beside these, its runs to ``<work>_<variant>``).
VARIANT = "point_mae_mn10"
BACKBONE = "pointclora/assets/point_mae_mn10.pth"

CLORA_BUDGETS = ((2, 4), (4, 4), (4, 8), (8, 8), (4, 16))  # (p, r)
LORA_RANKS = (1, 2, 4, 8, 16)
#: The peer methods, by registry name, each at its official setting (issue 18); add a name here to add a row.
PEERS = ("idpt", "dapt", "ppt", "pointgst", "gaprompt", "pointlora")
BASELINES = ("full", "linear", "scratch")
#: The method's default budget: the row the few-shot regime runs.
DEFAULT_ROW = {"clora": "clora_p4r8", "lora": "lora_r8"}
REGIMES = ("all", "10pc", "5w10s", "10w20s")
FEW_SHOT = {"5w10s": (5, 10), "10w20s": (10, 20)}
NUM_QUERY = 20
EPISODES = 10

#: Short schedules: a three-point lr grid per family (adapters with zero-initialised up-projections want larger
#: steps). The first sitting used the lower two points of each grid and most rows chose the upper one, so every grid
#: was widened by one step beyond the edge it chose (scratch chose its lower edge); records of the earlier points
#: are kept and read back, so only the new point runs.
LRS = {
    "clora": [2e-3, 4e-3, 8e-3],
    "lora": [2e-3, 4e-3, 8e-3],
    "peer": [1e-3, 4e-3, 8e-3],
    "full": [5e-4, 1e-3, 2e-3],
    "linear": [4e-3, 1e-2, 2e-2],
    "scratch": [5e-4, 1e-3, 2e-3],
}
#: Per backbone, one more point per family: on point_mae_mn10_8x256 the first sitting's rows nearly all chose their
#: grid's lower edge (the deeper, wider backbone wants smaller steps), so each grid gains the step below it there.
#: Appended, not prepended: a tie still goes to the earlier point, so the earlier choices stand unless beaten.
WIDER_LRS = {
    "point_mae_mn10_8x256": {"clora": [1e-3], "lora": [1e-3], "peer": [5e-4], "full": [2.5e-4], "linear": [2e-3],
                             "scratch": [2.5e-4]},
}  # fmt: skip

#: Published settings that depend on the 384-wide, 12-block ViT-S with 64/128 groups, and how each scales to a
#: backbone of ``width``, ``depth`` and ``groups`` (the point_mae_mn10 values follow bench/peers_learning.py).
SCALED = {
    "idpt": (lambda w, d, g: {"prompt_layer": d - 1}, "prompt module before the last block (11 of 12 -> d-1)"),
    "dapt": (lambda w, d, g: {"rank": max(1, round(64 * w / 384)), "drop_adapter_rate": 0.0},
             "adapter rank 64 x width/384; adapter dropout 0 (ModelNet setting)"),
    "ppt": (lambda w, d, g: {"prompt_num_group": g}, "extra positional-prompt groups 128 -> the backbone's groups"),
    "pointgst": (lambda w, d, g: {"rank": max(1, round(36 * w / 384)), "local": 16},
                 "spectral rank 36 x width/384; local windows 32 -> 16 (32 groups)"),
    "gaprompt": (lambda w, d, g: {"prompt_depth": max(1, d // 2), "perturbation": 0.05},
                 "prompts in the first half of the blocks (6 of 12 -> d/2); ModelNet perturbation 0.05"),
    "pointlora": (lambda w, d, g: {"num_group_scales": [g, g // 2], "topk_scales": [g // 4, g // 16],
                                   "official_slices": False},
                  "extra tokenizations (128, 64) -> (g, g/2) groups, top-k (32, 8) -> (g/4, g/16)"),
}  # fmt: skip

#: Each paper's own figures on point_mae_s (PEERS.md 3.1: ScanObjectNN protocol, 2,048 points); None: not published.
PUBLISHED = {
    "full": ("22.1M", "4.76"),
    "idpt": ("1.7M", "7.10"),
    "dapt": ("1.1M", "4.96"),
    "ppt": ("1.04M", None),
    "pointgst": ("0.6M", "4.81"),
    "pointlora": ("0.77M", None),
    "clora_p4r8": (None, "'fewest' (claim)"),
}


@dataclass
class Spec:
    """One row: ``peft`` are the flat config kwargs on point_mae_mn10, ``peft_s`` those on point_mae_s."""

    name: str
    method: str
    family: str  # clora | lora | peer | full | linear | scratch (the lr grid)
    group: str  # grid | baseline | peer | ablation
    peft: Dict[str, Any] = field(default_factory=dict)
    peft_s: Optional[Dict[str, Any]] = None  # None: the same as ``peft`` (peers pass {}: their official defaults)
    note: str = ""
    default: bool = False  # the method's default budget (few-shot rows)
    lrs: Tuple[float, ...] = ()  # the lr grid chosen from on validation (default: the family's ``LRS``)

    def __post_init__(self) -> None:
        if self.peft_s is None:
            self.peft_s = dict(self.peft)
        if not self.lrs:
            self.lrs = tuple(LRS.get(self.family, ()))  # the frozen reference trains nothing

    @property
    def pretrained(self) -> bool:
        return self.family != "scratch"


def _clora(p: int, r: int, **kw: Any) -> Dict[str, Any]:
    return {"num_bases": p, "r": r, "alpha": r, "sade_weight": 0.1, **kw}


def backbone_dims(variant: str) -> Dict[str, int]:
    """What the peers' settings scale with: the variant's ``width``, ``depth`` and token ``groups``."""
    from pointclora.models import model_defaults

    d = model_defaults(variant)
    return {"width": int(d["trans_dim"]), "depth": int(d["depth"]), "groups": int(d["num_groups"])}


def clora_adapter_count(width: int, depth: int, p: int, r: int) -> int:
    """CLoRA's adapter parameters on a ``width`` x ``depth`` backbone (checked against built models in the tests).

    One bank of ``p`` bases of rank ``r`` per linear shape, shared by every block: (w -> w) for q, k, v and proj,
    (w -> 4w) for fc1, (4w -> w) for fc2, so ``p r (2w + 5w + 5w)``; plus each module's ``p`` coefficient blocks of
    ``r x r`` (q, k, v, proj, fc1, fc2: six a block)."""
    return p * r * 12 * width + 6 * depth * p * r * r


def lora_adapter_count(width: int, depth: int, r: int) -> int:
    """LoRA's: ``r (in + out)`` for each of q, k, v, proj (2w), fc1 and fc2 (5w) in every block."""
    return r * 18 * width * depth


def lora_rank_matching_clora(width: int, depth: int, p: int, r: int) -> int:
    """The LoRA rank whose adapters count the nearest to CLoRA ``(p, r)``'s: the ablation "no sharing at the same
    parameter count" (6 on point_mae_mn10, where it is exact; 3 on point_mae_mn10_8x256, exact too: CLoRA's banks
    grow with the width alone, LoRA with width x depth)."""
    return max(1, round(clora_adapter_count(width, depth, p, r) / lora_adapter_count(width, depth, 1)))


def variant_specs(variant: str) -> List[Spec]:
    """:func:`specs` scaled to a registered variant, each lr grid widened by ``WIDER_LRS`` for it."""
    wider = WIDER_LRS.get(variant, {})
    return [replace(s, lrs=s.lrs + tuple(wider.get(s.family, ()))) for s in specs(**backbone_dims(variant))]


def specs(width: int, depth: int, groups: int) -> List[Spec]:
    """Every row, in table order (the backbone's ``width``, ``depth`` and token ``groups`` scale the peers; a
    registered backbone's rows are :func:`variant_specs`)."""
    rows = []
    for p, r in CLORA_BUDGETS:
        name = f"clora_p{p}r{r}"
        rows.append(Spec(name, "clora", "clora", "grid", _clora(p, r), _clora(p, r), default=name == "clora_p4r8"))
    for r in LORA_RANKS:
        kw = {"r": r, "alpha": r}
        rows.append(Spec(f"lora_r{r}", "lora", "lora", "grid", kw, kw, default=r == 8))
    for name in PEERS:
        scale, how = SCALED.get(name, (lambda w, d, g: {}, "official defaults"))
        rows.append(Spec(name, name, "peer", "peer", scale(width, depth, groups), {}, how, default=True))
    for name in BASELINES:
        method = "full" if name == "scratch" else name
        note = "random init, every tensor trains" if name == "scratch" else ""
        rows.append(Spec(name, method, name, "baseline", note=note, default=True))
    # Ablations at the default budget (p 4, r 8): the grid row clora_p4r8 is SADE 0.1 with Q trained.
    matched = lora_rank_matching_clora(width, depth, 4, 8)
    rows += [
        Spec("clora_p4r8_sade0", "clora", "clora", "ablation", _clora(4, 8, sade_weight=0.0), note="SADE off"),
        Spec("clora_p4r8_sade1", "clora", "clora", "ablation", _clora(4, 8, sade_weight=1.0), note="SADE weight 1"),
        Spec("clora_p4r8_qid", "clora", "clora", "ablation", _clora(4, 8, q_fixed=True),
             note="Q fixed to the identity (no per-module coefficients)"),
        Spec("lora_r32", "lora", "lora", "ablation", {"r": 32, "alpha": 32},
             note="no sharing: LoRA of rank p*r = 32 (the same rank bound, more parameters)"),
        Spec(f"lora_r{matched}", "lora", "lora", "ablation", {"r": matched, "alpha": matched},
             note="no sharing: LoRA at about CLoRA p4 r8's parameter count on this backbone"),
    ]  # fmt: skip
    return rows


def registered(spec: Spec) -> bool:
    from pointclora.peft import list_peft_methods

    return spec.method in list_peft_methods()


# --------------------------------------------------------------------------------------------------- records
def record_dir(results: Path, regime: str, row: str) -> Path:
    return results / regime / row


def record_name(lr: float, seed: int) -> str:
    return f"lr{lr:g}_seed{seed}.json"


def read_records(results: Path, regime: str, row: str) -> List[Dict[str, Any]]:
    d = record_dir(results, regime, row)
    return [json.loads(f.read_text()) for f in sorted(d.glob("*.json"))] if d.is_dir() else []


def _record(spec: Spec, regime: str, cfg: Mapping[str, Any], metrics: Mapping[str, Any], cpu_s: float, **extra):
    keep = (
        "acc",
        "mean_class_acc",
        "best_val_acc",
        "best_epoch",
        "last_acc",
        "last_mean_class_acc",
        "epochs",
        "trainable_params",
        "trainable_params_without_head",
        "total_params",
        "wall_time_s",
        "num_points",
    )
    out = {"row": spec.name, "regime": regime, "variant": cfg["model"]["name"], "method": spec.method,
           "peft": cfg["peft"], "lr": float(cfg["optim"]["lr"]), "seed": int(cfg["train"]["seed"]),
           "batch_size": int(cfg["data"]["batch_size"]), **{k: metrics.get(k) for k in keep},
           **{k: v for k, v in metrics.items() if "gflops" in k and isinstance(v, (int, float))},
           "cpu_s": round(cpu_s, 1), "torch_threads": torch.get_num_threads(),
           "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **extra}  # fmt: skip
    return out


def recording_runner(spec: Spec, regime: str, data: Mapping[str, Any], results: Path, name=record_name):
    """A :func:`run_sweep` runner that reads a committed record back instead of rerunning, else trains in ``output``
    (resuming its checkpoint) and records the run atomically once it has finished."""

    def runner(cfg, output, resume, quiet):
        from pointclora.api import run_finetune

        path = record_dir(results, regime, spec.name) / name(float(cfg["optim"]["lr"]), int(cfg["train"]["seed"]))
        if path.exists():
            return json.loads(path.read_text())
        t0 = time.process_time()  # one thread: the run's own CPU time, not the time it waited for a shared core
        metrics = run_finetune(cfg, output=output, resume=resume, quiet=quiet, datasets=data)
        rec = _record(spec, regime, cfg, metrics, time.process_time() - t0, resumed=bool(resume))
        atomic_write_json(rec, path)
        return rec

    return runner


# --------------------------------------------------------------------------------------------------- configs
def row_config(spec: Spec, regime: str, a: argparse.Namespace) -> Dict[str, Any]:
    few = regime != "all"
    epochs = a.epochs_all if regime == "all" else a.epochs_few
    batch = a.batch_all if regime == "all" else a.batch_few
    cfg = base_config("linear", a.backbone, a.variant, epochs, max(1, epochs // a.evals), batch)
    cfg = copy.deepcopy(cfg)
    cfg["name"] = f"frontier-{spec.name}"
    cfg["peft"] = {"method": spec.method, **spec.peft}
    cfg["model"]["checkpoint"] = a.backbone if spec.pretrained else None
    # 4 epochs: a warm-up epoch cost every method 1-5 points in bench/learning.py's sweeps (docs/RESULTS.md 3).
    cfg["schedule"]["warmup_epochs"] = 1 if few else 0
    return cfg


# --------------------------------------------------------------------------------------------------- regimes
def fewshot_episode(x: np.ndarray, y: np.ndarray, classes: Sequence[str], way: int, shot: int, episode: int):
    """``way`` classes, ``shot`` supports + ``NUM_QUERY`` disjoint queries each, from ``x (S, N, 3)``; seeded by
    ``(way, shot, episode)`` alone, so every row sees the same episodes. Labels renumbered ``0..way-1``."""
    rng = np.random.default_rng([20, way, shot, episode])
    chosen = np.sort(rng.choice(np.unique(y), size=way, replace=False))
    sup, qry, ys, yq = [], [], [], []
    for new, c in enumerate(chosen):
        idx = rng.permutation(np.flatnonzero(y == c))
        if len(idx) < shot + NUM_QUERY:
            raise ValueError(f"class {classes[c]!r} has {len(idx)} shapes, fewer than shot + query {shot + NUM_QUERY}")
        sup += idx[:shot].tolist()
        qry += idx[shot : shot + NUM_QUERY].tolist()
        ys += [new] * shot
        yq += [new] * NUM_QUERY
    names = [classes[c] for c in chosen]
    train = ArrayDataset(x[sup], np.array(ys), names, augment=True)
    # No labelled shape besides the supports: "validation" is the supports themselves (un-augmented), so the score
    # reported is the last epoch's on the queries (nothing is selected on them).
    return {"train": train, "val": ArrayDataset(x[sup], np.array(ys), names), "test": ArrayDataset(
        x[qry], np.array(yq), names), "classes": names, "val_source": "the supports (no selection)"}  # fmt: skip


def chosen_lr(results: Path, regime: str, spec: Spec) -> Optional[float]:
    """The seed-0 lr of ``spec.lrs`` with the best validation accuracy (first of equals, grid order), or None until
    all ran."""
    lrs = spec.lrs
    recs = {(r["lr"], r["seed"]): r for r in read_records(results, regime, spec.name)}
    if not all((float(lr), 0) in recs for lr in lrs):
        return None
    return max(lrs, key=lambda lr: (float(recs[(float(lr), 0)]["best_val_acc"]), -list(lrs).index(lr)))


def run_row(spec: Spec, regime: str, data: Mapping[str, Any], a: argparse.Namespace) -> None:
    from pointclora.config import apply_overrides
    from pointclora.engine.sweep import run_sweep

    log = lambda s: print(f"[{regime} {spec.name}] {s}", flush=True)  # noqa: E731
    cfg = row_config(spec, regime, a)
    lrs = list(spec.lrs)
    work = a.work / regime / spec.name
    runner = recording_runner(spec, regime, data, a.results)
    sweep = run_sweep(cfg, {"optim.lr": lrs}, work / "sweep", runner=runner, log=log)
    lr = sweep["best"]["optim.lr"]
    for seed in a.seeds[1:]:
        c = apply_overrides(cfg, [f"optim.lr={lr}", f"train.seed={seed}"])
        d = work / f"lr{lr:g}_seed{seed}"  # the lr in the name: a widened grid may choose another
        rec = runner(c, d, (d / "checkpoints" / "last.pth").exists(), True)
        log(f"lr {lr:g} seed {seed}: test OA {rec['acc']:.2f}")


def run_fewshot_row(spec: Spec, regime: str, x, y, classes, a: argparse.Namespace) -> None:
    from pointclora.config import apply_overrides

    way, shot = FEW_SHOT[regime]
    lr = chosen_lr(a.results, "10pc", spec)
    if lr is None:
        print(f"[{regime} {spec.name}] skipped: its 10pc lr sweep has not finished (the few-shot lr comes from it)")
        return
    cfg = apply_overrides(row_config(spec, regime, a), [f"optim.lr={lr}", "train.seed=0"])
    for ep in range(a.episodes):
        data = fewshot_episode(x, y, classes, way, shot, ep)
        runner = recording_runner(spec, regime, data, a.results, name=lambda lr, seed, ep=ep: f"episode{ep}.json")
        d = a.work / regime / spec.name / f"episode{ep}"
        rec = runner(cfg, d, (d / "checkpoints" / "last.pth").exists(), True)
        print(f"[{regime} {spec.name}] episode {ep}: query OA (last epoch) {rec['last_acc']:.2f}", flush=True)


def cmd_run(a: argparse.Namespace) -> int:
    torch.set_num_threads(1)
    rows = [s for s in variant_specs(a.variant) if s.group in a.groups and (not a.only or s.name in a.only)]
    missing = [s.name for s in rows if not registered(s)]
    if missing:
        print(f"not registered in this checkout, skipped: {', '.join(missing)}", flush=True)
    rows = [s for s in rows if s.name not in missing]
    t0 = time.time()
    for regime in a.regimes:
        if regime in FEW_SHOT:
            from pretrain_backbone import load_split

            cache = a.splits.parent / "cache"
            x, y, classes = load_split(a.splits, "train", cache / f"{a.splits.name}_train.npz")
            for spec in (s for s in rows if s.default):
                run_fewshot_row(spec, regime, x, y, classes, a)
            continue
        data = build_regime(regime, a.splits)
        for spec in rows:
            run_row(spec, regime, data, a)
    print(f"done in {(time.time() - t0) / 60:.1f} min wall")
    return 0


# --------------------------------------------------------------------------------------------------- static costs
def static_costs(spec: Spec, variant: str, num_classes: int, num_points: int, num_groups: Optional[int]):
    """Trainable parameters (with / without the head) and batch-1 GFLOPs as trained and merged (where mergeable)."""
    from pointclora.models import create_model
    from pointclora.peft import (
        can_merge,
        inject_adapters,
        make_peft_config,
        trainable_parameter_summary,
    )
    from pointclora.tasks.classification import classifier_gflops

    torch.manual_seed(0)
    kw = {"num_groups": num_groups} if num_groups else {}
    model = create_model(variant, num_classes=num_classes, **kw)
    peft = spec.peft_s if variant == "point_mae_s" else spec.peft
    inject_adapters(model, make_peft_config(spec.method, **peft))
    # gflops: deployed (adapters merged into a copy where the method can merge); gflops_unmerged: as trained
    return {**trainable_parameter_summary(model), **classifier_gflops(model, num_points), "mergeable": can_merge(model)}


def cmd_static(a: argparse.Namespace) -> int:
    torch.set_num_threads(1)
    table: Dict[str, Any] = {}
    floor = Spec("frozen", "none", "none", "reference", note="the frozen backbone (nothing trains): the GFLOP floor")
    for spec in [floor, *variant_specs(a.variant)]:
        if not registered(spec):
            print(f"{spec.name}: not registered, skipped")
            continue
        table[spec.name] = {
            a.variant: static_costs(spec, a.variant, 10, 1024, None),
            "point_mae_s": static_costs(spec, "point_mae_s", 15, 2048, 128),
        }
        print(spec.name, json.dumps(table[spec.name]), flush=True)
    atomic_write_json(table, a.results / "static.json")
    return 0


# --------------------------------------------------------------------------------------------------- step profile
def _build_for_profile(spec: Spec, variant: str, num_classes: int = 10):
    from pointclora.models import create_model
    from pointclora.peft import inject_adapters, make_peft_config

    torch.manual_seed(0)
    model = create_model(variant, num_classes=num_classes)
    return inject_adapters(model, make_peft_config(spec.method, **spec.peft))


def profile_worker(spec_name: str, batch: int, npoints: int, variant: str) -> Dict[str, Any]:
    from stepping import rss_kib, training_step

    spec = next(s for s in variant_specs(variant) if s.name == spec_name)
    model = _build_for_profile(spec, variant)
    base = rss_kib("VmRSS") * 1024
    step = training_step(model, batch, npoints, num_classes=10, lr=1e-3)
    for _ in range(2):  # the optimizer state exists from the first step
        step()
    return {"peak_bytes": rss_kib("VmHWM") * 1024 - base}


def cmd_profile(a: argparse.Namespace) -> int:
    from stepping import interleaved, training_step

    torch.set_num_threads(1)
    rows = [s for s in variant_specs(a.variant) if registered(s) and (not a.only or s.name in a.only)]
    out: Dict[str, Any] = {}
    for s in rows:  # peak memory: one child process each, so each peak is its own
        worker = [sys.executable, __file__, "_profile_worker", s.name, str(a.batch), str(a.points), a.variant]
        res = subprocess.run(worker, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise RuntimeError(f"profile worker for {s.name} failed:\n{res.stderr[-2000:]}")
        out[s.name] = json.loads(res.stdout.strip().splitlines()[-1])
    steppers = [
        training_step(_build_for_profile(s, a.variant), a.batch, a.points, num_classes=10, lr=1e-3) for s in rows
    ]
    times = interleaved(steppers, a.steps)  # round-robin: load from other jobs falls on every row alike
    for s, t in zip(rows, times):
        out[s.name]["step_s"] = t
        print(f"{s.name:<20} step {t:.3f} s  peak {out[s.name]['peak_bytes'] / 2**20:.0f} MB", flush=True)
    meta = {
        "variant": a.variant,
        "batch": a.batch,
        "points": a.points,
        "steps": a.steps,
        "clock": "process CPU time, 1 thread, median",
    }
    atomic_write_json({"meta": meta, "rows": out}, a.results / "profile.json")
    return 0


# --------------------------------------------------------------------------------------------------- combine
def summarize(results: Path, regime: str, spec: Spec, seeds: Sequence[int]) -> Optional[Dict[str, Any]]:
    """Mean ± std (population, as bench/learning.py) over the runs that finished; None when none did."""
    recs = read_records(results, regime, spec.name)
    if not recs:
        return None
    if regime in FEW_SHOT:
        runs, score, lr = recs, "last_acc", recs[0]["lr"]
        mca = "last_mean_class_acc"
        expected = EPISODES
    else:
        lr = chosen_lr(results, regime, spec)
        if lr is None:
            return {"row": spec.name, "partial": "lr sweep unfinished", "runs": 0}
        runs = [r for r in recs if r["lr"] == float(lr) and r["seed"] in seeds]
        score, mca, expected = "acc", "mean_class_acc", len(seeds)
    accs = [float(r[score]) for r in runs]
    mcas = [float(r[mca]) for r in runs if r.get(mca) is not None]
    return {
        "row": spec.name,
        "lr": lr,
        "runs": len(runs),
        "expected": expected,
        "mean": statistics.mean(accs),
        "std": statistics.pstdev(accs) if len(accs) > 1 else float("nan"),
        "mca": statistics.mean(mcas) if mcas else float("nan"),
        "cpu_s": sum(float(r.get("cpu_s") or 0) for r in recs),
        "cpu_runs": len(recs),
        **({"trainable_params": runs[0]["trainable_params"]} if runs and runs[0].get("trainable_params") else {}),
        **({"without": runs[0]["trainable_params_without_head"]} if runs and runs[0].get("trainable_params") else {}),
    }


def pareto(points: Sequence[Dict[str, Any]], x: str = "trainable_params") -> List[str]:
    """Rows no other row dominates: none has fewer-or-equal ``x`` and a higher mean (ties in both keep both)."""
    front = []
    for p in points:
        if not any(q is not p and q[x] <= p[x] and q["mean"] > p["mean"] for q in points):
            front.append(p["row"])
    return front


def _fmt_params(n: Optional[int]) -> str:
    return "—" if n is None else f"{n:,}"


def regime_table(regime: str, rows: List[Spec], results: Path, seeds, static, profile, variant: str = VARIANT):
    ref_prof = profile.get("clora_p4r8", {})
    pts, lines, missing = [], [], []
    score = "query OA % (last epoch, mean ± std)" if regime in FEW_SHOT else "held-out OA % (mean ± std)"
    lr_col = "lr (its 10pc choice)" if regime in FEW_SHOT else "chosen lr"
    head = (
        f"| row | {lr_col} | {score} | mAcc % | runs | trainable (w/o head) | GFLOPs "
        "(merged) | step × CLoRA | peak mem × CLoRA | frontier |"
    )
    lines += [head, "|" + "---|" * 10]
    for spec in rows:
        s = summarize(results, regime, spec, seeds)
        st = static.get(spec.name, {}).get(variant)
        if st is None or s is None or not s.get("runs"):
            why = "not registered" if st is None else s.get("partial", "no runs") if s else "not run"
            missing.append(f"{spec.name} ({why})")
            continue
        # the runs' own counts where recorded (a 5-way episode's head has 5 outputs), else the 10-class static ones
        s.setdefault("trainable_params", st["trainable_params"])
        s.setdefault("without", st["trainable_params_without_head"])
        s["gflops"] = st["gflops"]
        pts.append(s)
    front = pareto(pts)
    for s in pts:
        p = profile.get(s["row"], {})
        step = f"{p['step_s'] / ref_prof['step_s']:.2f}" if p and ref_prof else "—"
        mem = f"{p['peak_bytes'] / ref_prof['peak_bytes']:.2f}" if p and ref_prof else "—"
        runs = f"{s['runs']}/{s['expected']}" + ("" if s["runs"] == s["expected"] else " (partial)")
        lines.append(
            f"| {s['row']} | {s['lr']:g} | {s['mean']:.2f} ± {s['std']:.2f} | {s['mca']:.2f} | {runs} | "
            f"{s['trainable_params']:,} ({s['without']:,}) | {s['gflops']:.4f} | {step} | {mem} | "
            f"{'**yes**' if s['row'] in front else ''} |"
        )
    if missing:
        lines.append(f"\nmissing: {', '.join(missing)}")
    return "\n".join(lines), pts


def target_check(pts: List[Dict[str, Any]]) -> str:
    """Issue 20's first target per CLoRA row: no row of another method with <= its trainable params beats its mean by
    more than its std (a smaller CLoRA budget that does better is named apart: the method is still on the frontier)."""
    out = []
    for c in (p for p in pts if p["row"].startswith("clora_p") and "_" not in p["row"][6:]):
        margin = c["std"] if c["std"] == c["std"] else 0.0  # one seed so far: no spread
        beat = [q["row"] for q in pts if q is not c and q["trainable_params"] <= c["trainable_params"]
                and q["mean"] > c["mean"] + margin]  # fmt: skip
        others = [b for b in beat if not b.startswith("clora_")]
        own = [b for b in beat if b.startswith("clora_")]
        verdict = "beaten by " + ", ".join(others) if others else "on the frontier (within 1 std)"
        out.append(f"{c['row']}: {verdict}" + (f" (smaller CLoRA budgets do better: {', '.join(own)})" if own else ""))
    return "; ".join(out)


def static_table(rows: List[Spec], static, variant: str = VARIANT) -> str:
    short = variant.replace("point_mae_", "")
    lines = [f"| row | setting on {variant} (how scaled) | {short} trainable (w/o head) | {short} GFLOPs unmerged / "
             "merged | point_mae_s trainable (w/o head) | point_mae_s GFLOPs unmerged / merged | published params / "
             "GFLOPs |", "|" + "---|" * 7]  # fmt: skip
    for spec in [Spec("frozen", "none", "none", "reference", note="nothing trains: the GFLOP floor"), *rows]:
        st = static.get(spec.name)
        if not st:
            lines.append(f"| {spec.name} | not registered in this checkout | | | | | |")
            continue
        m, s = st[variant], st["point_mae_s"]
        pub = PUBLISHED.get(spec.name, (None, None))
        setting = ", ".join(f"{k} {v}" for k, v in spec.peft.items()) or "defaults"
        unmergeable = " (not mergeable)" if spec.group == "peer" and not m["mergeable"] else ""
        lines.append(
            f"| {spec.name} | {setting}{' (' + spec.note + ')' if spec.note else ''} | "
            f"{m['trainable_params']:,} ({m['trainable_params_without_head']:,}) | "
            f"{m['gflops_unmerged']:.4f} / {m['gflops']:.4f}{unmergeable} | "
            f"{s['trainable_params']:,} ({s['trainable_params_without_head']:,}) | "
            f"{s['gflops_unmerged']:.3f} / {s['gflops']:.3f} | "
            f"{pub[0] or '—'} / {pub[1] or '—'} |"
        )
    return "\n".join(lines)


def plot(panels: Dict[str, List[Dict[str, Any]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = {k: v for k, v in panels.items() if v}
    if not panels:
        return
    colours = {"clora": "tab:red", "lora": "tab:blue", "full": "black", "linear": "tab:gray", "scratch": "tab:brown"}
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, (regime, pts) in zip(axes[0], panels.items()):
        front = set(pareto(pts))
        for p in pts:
            fam = p["row"].split("_")[0]
            ax.errorbar(p["trainable_params"], p["mean"], yerr=0 if p["std"] != p["std"] else p["std"], fmt="o",
                        ms=4, capsize=2, color=colours.get(fam, "tab:green"),
                        mfc="none" if p["row"] not in front else None)  # fmt: skip
            ax.annotate(p["row"].replace("clora_", "").replace("lora_", "L"), (p["trainable_params"], p["mean"]),
                        textcoords="offset points", xytext=(3, 3), fontsize=6)  # fmt: skip
        fp = sorted((p for p in pts if p["row"] in front), key=lambda p: p["trainable_params"])
        ax.step([p["trainable_params"] for p in fp], [p["mean"] for p in fp], where="post", color="k", lw=0.8,
                alpha=0.5)  # fmt: skip
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(plt.NullFormatter())  # a range under one decade labels every minor tick: overlap
        ax.set_xlabel("trainable parameters (with head)")
        ax.set_ylabel("held-out OA % (mean ± std)")
        ax.set_title(f"{regime} (filled: Pareto frontier)", fontsize=9)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)


#: docs/RESULTS.md holds the combined tables between these two lines (``combine --write docs/RESULTS.md``).
MARKERS = ("<!-- frontier tables: begin (bench/frontier.py combine --write) -->", "<!-- frontier tables: end -->")


def markers(variant: str = VARIANT) -> Tuple[str, str]:
    """The two lines around a variant's tables: :data:`MARKERS` for the default one, lines naming it otherwise."""
    if variant == VARIANT:
        return MARKERS
    return (f"<!-- frontier tables ({variant}): begin (bench/frontier.py combine --variant {variant} --write) -->",
            f"<!-- frontier tables ({variant}): end -->")  # fmt: skip


def write_between_markers(doc: Path, text: str, variant: str = VARIANT) -> None:
    """Replace what lies between ``markers(variant)`` in ``doc`` with ``text``, its headings one level deeper (the
    section's own heading is the document's ``##``), two for another variant (a subsection, ``###``, of it)."""
    begin_line, end_line = markers(variant)
    body = doc.read_text()
    begin, end = body.find(begin_line), body.find(end_line)
    if begin < 0 or end < begin:
        raise SystemExit(f"error: {doc} has no '{begin_line}' ... '{end_line}' block to write the tables into")
    deeper = "#" if variant == VARIANT else "##"
    text = "\n".join(deeper + line if line.startswith("#") else line for line in text.strip("\n").splitlines())
    atomic_write_text(body[: begin + len(begin_line)] + "\n\n" + text + "\n\n" + body[end:], doc)


def cmd_combine(a: argparse.Namespace) -> int:
    if a.write:
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            code = cmd_combine(argparse.Namespace(**{**vars(a), "write": None}))
        sys.stdout.write(buffer.getvalue())
        write_between_markers(Path(a.write), buffer.getvalue(), a.variant)
        return code
    static = json.loads((a.results / "static.json").read_text()) if (a.results / "static.json").exists() else {}
    prof = a.results / "profile.json"
    profile = json.loads(prof.read_text())["rows"] if prof.exists() else {}
    all_rows = variant_specs(a.variant)
    panels, cpu = {}, {}
    print(f"## Costs without training ({a.variant}: 10 classes, 1,024 points; point_mae_s: 15 classes, 2,048 "
          "points / 128 groups)\n")  # fmt: skip
    print(static_table(all_rows, static, a.variant))
    for regime in a.regimes:
        rows = [s for s in all_rows if s.group != "ablation"]
        if regime in FEW_SHOT:
            rows = [s for s in rows if s.default]
        text, pts = regime_table(regime, rows, a.results, a.seeds, static, profile, a.variant)
        print(f"\n## {regime}\n\n{text}")
        if regime not in FEW_SHOT:
            abl = [s for s in all_rows if s.name in ("clora_p4r8", "lora_r8") or s.group == "ablation"]
            atext, _ = regime_table(regime, abl, a.results, a.seeds, static, profile, a.variant)
            print(f"\n### {regime}: ablations (rows beside the default CLoRA p4 r8)\n\n{atext}")
        check = target_check(pts)
        if check:
            print(f"\ntarget (CLoRA on the accuracy / parameter frontier), over the {len(pts)} rows with runs: {check}")
        panels[regime] = pts
        recs = [r for s in all_rows for r in read_records(a.results, regime, s.name)]
        cpu[regime] = (sum(float(r.get("cpu_s") or 0) for r in recs), len(recs))
    print("\n## CPU time of the runs recorded so far (process time, one thread)\n")
    for regime, (s, n) in cpu.items():
        print(f"- {regime}: {s / 3600:.2f} CPU-h over {n} runs" + (f" ({s / n:.0f} s / run)" if n else ""))
    if profile:
        print(f"\nstep time / peak memory: {json.loads(prof.read_text())['meta']}")
    if a.plot:
        plot(panels, Path(a.plot))
    return 0


def settle_backbone(a: argparse.Namespace, error) -> None:
    """Fill ``--backbone``, ``--results`` and ``--work`` from ``--variant``; ``error`` names what is missing."""
    from pointclora.models import list_models, pretrained_path

    if a.variant not in list_models():
        error(f"--variant {a.variant!r} is not a registered model; known: {', '.join(list_models())}")
    suffix = "" if a.variant == VARIANT else f"_{a.variant}"
    a.results = a.results or RESULTS.with_name(RESULTS.name + suffix)
    a.work = a.work or Path("/work/exp/frontier/runs" + suffix)
    if a.backbone is None:
        if a.command == "run":  # its weights by name: shipped, or made by its recipe; else say so before any run
            try:
                pretrained_path(a.variant)
            except (KeyError, FileNotFoundError) as e:
                error(f"--variant {a.variant}: {e.args[0]}; or pass --backbone FILE")
        # the default variant's runs were recorded with the package path (a resumed run's config must not change)
        a.backbone = BACKBONE if a.variant == VARIANT else a.variant


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_profile_worker"]:
        torch.set_num_threads(1)
        print(json.dumps(profile_worker(argv[1], int(argv[2]), int(argv[3]), argv[4])))
        return 0
    if "--combine" in argv:  # bench/learning.py's spelling
        argv = ["combine"] + [x for x in argv if x != "--combine"]
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("command", choices=("run", "static", "profile", "combine"))
    p.add_argument("--variant", default=VARIANT, help="the registered backbone variant the frontier is drawn on")
    p.add_argument("--backbone", help="its pre-trained file (default: the variant's shipped weights)")
    p.add_argument("--results", type=Path, help="the committed records (default: bench/results/frontier[_<variant>])")
    p.add_argument("--work", type=Path, help="run folders, weights (default: /work/exp/frontier/runs[_<variant>])")
    p.add_argument("--splits", type=Path, default=Path("/work/exp/splits/mn10_heldout"))
    p.add_argument("--regimes", nargs="+", default=list(REGIMES), choices=REGIMES)
    p.add_argument("--groups", nargs="+", default=["grid", "baseline", "ablation", "peer"],
                   choices=("grid", "baseline", "ablation", "peer"))  # fmt: skip
    p.add_argument("--only", nargs="+", default=None, help="row names (see specs())")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--episodes", type=int, default=EPISODES)
    p.add_argument("--epochs-all", type=int, default=4)
    p.add_argument("--epochs-few", type=int, default=30)
    p.add_argument("--batch-all", type=int, default=32)
    p.add_argument("--batch-few", type=int, default=16)
    p.add_argument("--evals", type=int, default=1, help="validation passes per run")
    p.add_argument("--batch", type=int, default=32, help="profile: batch")
    p.add_argument("--points", type=int, default=1024, help="profile: points per cloud")
    p.add_argument("--steps", type=int, default=5, help="profile: round-robin steps after a warm-up")
    p.add_argument("--write", help="combine: also write the tables into this document, between its markers")
    p.add_argument("--plot", default="", help="combine: the figure's path ('' for none)")
    a = p.parse_args(argv)
    settle_backbone(a, p.error)
    if a.only:
        known = {s.name for s in variant_specs(a.variant)}
        unknown = sorted(set(a.only) - known)
        if unknown:
            p.error(f"--only: unknown rows {unknown}; known: {', '.join(sorted(known))}")
    return {"run": cmd_run, "static": cmd_static, "profile": cmd_profile, "combine": cmd_combine}[a.command](a)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
