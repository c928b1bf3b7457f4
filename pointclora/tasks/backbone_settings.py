"""A shipped backbone brings its own settings: ``--ckpt point_mae_mn10`` switches the model variant, its tokenizer
(groups x group size) and the number of points to what the encoder was pre-trained with, in every tool (#19 item 3).

Before, ``tools/segment.py --cfg shapenetpart.yaml --ckpt point_mae_mn10`` kept the config's ``point_mae_s`` and printed
a 20-tensor shape-mismatch dump. A backbone file that records its variant (``tools/pretrain.py`` exports) but does
not fit the configured model is refused in one line naming the ``--set`` to add.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, MutableMapping, Optional

__all__ = ["ARCH_KEYS", "TOKENIZER_KEYS", "apply_shipped_backbone", "check_backbone_variant"]

#: Constructor keys that change tensor shapes: a backbone only loads into a model with the same values.
ARCH_KEYS = ("trans_dim", "depth", "num_heads", "encoder_dims", "encoder_hidden_dims")
#: Keys that do not change shapes but are part of what the encoder learned (its patches).
TOKENIZER_KEYS = ("num_groups", "group_size")


def _norm(v: Any) -> Any:
    return list(v) if isinstance(v, (list, tuple)) else v


def apply_shipped_backbone(cfg: MutableMapping[str, Any]) -> List[str]:
    """When ``model.checkpoint`` is a shipped backbone's name, set ``model.name`` to it, drop the config's
    architecture and tokenizer keys for the variant's own, and set ``data.num_points`` (and ``data.up_axis`` when
    recorded) to its pre-training values. Returns ``"key: old -> new"`` for every change (``--set`` applied after
    this still wins)."""
    from ..models.registry import model_defaults, pretrained_meta, pretrained_names

    name = (cfg.get("model") or {}).get("checkpoint")
    if not name or str(name) not in pretrained_names():
        return []
    name = str(name)
    model, data = cfg.setdefault("model", {}), cfg.setdefault("data", {})
    changes: List[str] = []
    if model.get("name") != name:
        changes.append(f"model.name: {model.get('name')} -> {name}")
        model["name"] = name
    defaults = model_defaults(name)
    for key in ARCH_KEYS + TOKENIZER_KEYS:
        if key in model and _norm(model[key]) != _norm(defaults.get(key)):
            changes.append(f"model.{key}: {model[key]} -> {defaults.get(key)}")
            del model[key]  # the variant's own value
    meta = pretrained_meta(name)
    if "num_points" in meta and int(data.get("num_points", meta["num_points"])) != int(meta["num_points"]):
        changes.append(f"data.num_points: {data.get('num_points')} -> {meta['num_points']}")
        data["num_points"] = int(meta["num_points"])
    return changes


def check_backbone_variant(checkpoint: Mapping[str, Any], variant: str, model_kwargs: Mapping[str, Any],
                           source: str) -> None:  # fmt: skip
    """Refuse in one line a backbone file whose recorded variant has other tensor shapes than the model about to be
    built (``variant`` + ``model_kwargs``), naming the ``--set`` that fits it. Files without a record pass."""
    from ..models.registry import list_models, model_defaults

    recorded: Optional[str] = checkpoint.get("variant") if isinstance(checkpoint, Mapping) else None
    if not recorded or recorded == variant or recorded not in list_models():
        return
    theirs = {**model_defaults(recorded), **dict((checkpoint.get("config") or {}).get("model") or {})}
    ours = {**model_defaults(variant), **dict(model_kwargs)}
    diff: Dict[str, Any] = {k: (ours.get(k), theirs.get(k)) for k in ARCH_KEYS
                            if _norm(ours.get(k)) != _norm(theirs.get(k))}  # fmt: skip
    if diff:
        shown = ", ".join(f"{k} {a} vs {b}" for k, (a, b) in diff.items())
        raise ValueError(f"{source} holds a {recorded} encoder, which does not fit model.name={variant} ({shown}): "
                         f"add --set model.name={recorded}")  # fmt: skip
