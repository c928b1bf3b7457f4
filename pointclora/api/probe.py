"""Linear probe of a frozen backbone beside a random one on a dataset's train / test splits (``tools/probe.py``)."""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence

__all__ = ["run_probe", "load_dataset_config", "probe_table"]


def load_dataset_config(path: str) -> Dict[str, Any]:
    """A dataset mapping (``name`` + constructor arguments) from a dataset or experiment config file."""
    from ..config import ConfigError, _expand, _strip_markers, load_yaml, resolve_config_path

    src = resolve_config_path(path, key="dataset")
    raw = load_yaml(src)
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{src}: a config file must hold a mapping, got {type(raw).__name__}")
    cfg = _strip_markers(_expand(raw, src, "dataset", [src]))
    if "name" not in cfg:
        cfg = _strip_markers(_expand(raw, src, None, [src])).get("dataset")
    if not isinstance(cfg, Mapping) or "name" not in cfg:
        raise ConfigError(f"{src}: expected a dataset config (a 'name' key) or a config with a 'dataset' section")
    return dict(cfg)


def _build_backbone(weights: str, model_name: Optional[str]):
    """``(encoder, description)``: a classifier variant with the weights loaded, or a random one."""
    import os

    from ..models import create_model
    from ..models.checkpoint import load_pretrained, safe_torch_load

    if weights == "random":
        return create_model(model_name or "point_mae_demo", num_classes=2), "random"
    from ..models import registry

    shipped = getattr(registry, "pretrained_names", lambda: [])()
    if weights in shipped:  # a shipped backbone (named as its variant) or an official file of the hub table
        from ..models.hub import hub_entry, hub_names

        variant = hub_entry(weights).variant if weights in hub_names() else weights
        return create_model(model_name or variant, num_classes=2, pretrained=weights), weights
    if not os.path.isfile(weights):
        hint = f" or one of the shipped backbones {shipped}" if shipped else ""
        raise FileNotFoundError(f"--weights {weights!r}: no such file{hint}")
    obj = safe_torch_load(weights)
    meta = obj if isinstance(obj, Mapping) else {}
    name = model_name or meta.get("variant") or "point_mae_demo"
    # Encoder overrides recorded at pre-training (e.g. group_size=32) shape the tokenizer: without them the features
    # would come from patches the weights never saw.
    recorded = (meta.get("config") or {}).get("model") or {}
    from ..tasks.common import MODEL_META_KEYS

    overrides = {k: v for k, v in recorded.items() if k not in MODEL_META_KEYS and v is not None}
    if model_name and model_name != meta.get("variant"):
        overrides = {}  # another variant named on the command line: its own defaults
    model = create_model(name, num_classes=2, **overrides)
    res = load_pretrained(model, obj, log=False)
    extra = "".join(f", {k}={v}" for k, v in overrides.items())
    return model, f"{weights} ({name}{extra}, {len(res.loaded_keys)} tensors loaded)"


def run_probe(
    weights: str,
    dataset_cfg: Mapping[str, Any],
    model_name: Optional[str] = None,
    npoints: int = 1024,
    train_split: str = "train",
    test_split: str = "test",
    per_class: Sequence[int] = (10,),
    draws: int = 3,
    classifier: str = "logreg",
    layers: Optional[Sequence[int]] = None,
    seed: int = 0,
    batch_size: int = 64,
    device: str = "cpu",
) -> Dict[str, Any]:
    """Probe ``weights`` on ``dataset_cfg``.

    Returns ``{"weights", "train", "test", "backbone": {...}, "random": {...}}`` (metric keys as
    :func:`pointclora.models.probe.probe_backbone`).
    """
    import numpy as np
    import torch

    from ..datasets import build_dataset
    from ..datasets.transforms import eval_transforms
    from ..models.probe import probe_backbone

    # What the weights do not provide is drawn at build time: the cls token and position of a Point-MAE encoder (which
    # every patch token attends to), or the whole of a random backbone. Drawn from ``seed``, so a command gives the
    # same features and figures every time it runs.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model, desc = _build_backbone(weights, model_name)
    tf = eval_transforms(npoints)
    train = build_dataset(dict(dataset_cfg), train_split, tf)
    test = build_dataset(dict(dataset_cfg), test_split, tf)
    if len(train) == 0 or len(test) == 0:
        raise ValueError(f"dataset {dataset_cfg.get('name')!r}: empty split ({len(train)} train / {len(test)} test)")
    ty = (
        np.asarray([int(train[i]["label"]) for i in range(len(train))])
        if not hasattr(train, "labels")
        else train.labels
    )
    sy = np.asarray([int(test[i]["label"]) for i in range(len(test))]) if not hasattr(test, "labels") else test.labels
    res = probe_backbone(
        model,
        train,
        np.asarray(ty),
        test,
        np.asarray(sy),
        per_class=(None, *per_class),
        draws=draws,
        layers=layers,
        classifier=classifier,
        seed=seed,
        batch_size=batch_size,
        device=device,
        with_random=weights != "random",
    )
    return {"weights": desc, "train": len(train), "test": len(test), **res}


def probe_table(result: Mapping[str, Any]) -> str:
    rows = sorted({k.rsplit("/", 1)[0] for k in result["backbone"] if k.endswith("/oa")})
    cols = [c for c in ("backbone", "random") if c in result]
    lines = [f"probe of {result['weights']}: {result['train']} train / {result['test']} test shapes"]
    lines.append(f"{'feature / labels':28s}" + "".join(f"{c + ' OA':>14s}{c + ' mAcc':>14s}" for c in cols))
    for r in rows:
        cells = "".join(f"{result[c][r + '/oa']:14.2f}{result[c][r + '/macc']:14.2f}" for c in cols)
        lines.append(f"{r:28s}{cells}")
    return "\n".join(lines)
