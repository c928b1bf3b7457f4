"""Experiment configs: YAML files composed with ``_base_``, checked dotted overrides, a schema with suggestions.

A config composes four shelves of the repository::

    _base_: [schedules/cls_300e.yaml, adapters/clora.yaml]     # top-level bases, merged in order
    dataset: {_base_: scanobjectnn_pb_t50_rs.yaml}             # a flat datasets/*.yaml (name + constructor kwargs)
    model: {_base_: point_mae_s.yaml, num_groups: 128}         # a flat models/*.yaml (name, checkpoint, overrides)
    data: {num_points: 2048}

Rules:
- ``_base_`` (a string or a list) may appear in any mapping. The bases are loaded and deep-merged in order, then the
  mapping's own keys are merged on top. ``_replace_: true`` in a mapping drops what the bases put there instead of
  merging (to swap one dataset for another without leftovers).
- A base path is looked up relative to the including file first; a bare name (``scanobjectnn.yaml``) is then looked
  up in ``configs/``, ``datasets/``, ``models/`` (the folder matching the key first: ``dataset`` -> ``datasets/``,
  ``model`` -> ``models/``) under the current directory and under the repository that holds this package.
- Every key is checked against :data:`DEFAULTS` and against the schemas the owners of the other sections declare
  (:func:`register_section_schema`: the model registry its variants' constructor keys, the dataset registry a dataset
  class's, the PEFT registry a method's config fields); an unknown key is an error naming the file or override and the
  closest valid key. This module imports none of them: a section whose owner is not imported yet is not checked
  (every tool imports them; ``import pointclora.api`` does too). ``pretrain`` is free-form here and checked by the
  task that reads it.
"""

from __future__ import annotations

import copy
import difflib
import os
import re
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import yaml

__all__ = [
    "ConfigError",
    "DEFAULTS",
    "FREE_SECTIONS",
    "search_roots",
    "resolve_config_path",
    "load_yaml",
    "load_config",
    "merge",
    "apply_overrides",
    "validate_config",
    "register_section_schema",
    "section_schemas",
    "dump_config",
    "save_config",
    "config_from_string",
    "get_key",
]

PathLike = Union[str, os.PathLike]


class ConfigError(ValueError):
    """A config file, key or value is wrong; the message names the file or override, the key and the value."""


#: Every section and key a fine-tuning config may set, with its default. Keys equal the keyword names of the code that
#: consumes them. ``None`` means "not set" (e.g. no pre-trained checkpoint: train from scratch).
DEFAULTS: Dict[str, Any] = {
    "task": "classification",  # classification | part_segmentation | mae_pretraining (pointclora.tasks)
    "protocol": "ours",  # ours | point-mae (--protocol: the official runner's choices, docs/PROTOCOL.md)
    "name": None,  # experiment name (defaults to the config file stem); used for the default run directory
    "dataset": {},  # free-form: the datasets/*.yaml dict (name + constructor kwargs), built by build_dataset
    "model": {
        "name": "point_mae_s",  # a registered variant, see pointclora.models.list_models()
        "checkpoint": None,  # pre-trained backbone weights (Point-MAE pretrain.pth, Point-BERT, ours)
        "checkpoint_prefix": None,  # where the encoder lives inside a foreign checkpoint, when not auto-detected
        "init": None,  # null: the model's own init (trunc normal); "pytorch": PyTorch defaults (official scratch runs)
        # ... plus any constructor keyword of the variant (num_groups, group_size, drop_path_rate, ...)
    },
    "peft": {"method": "clora"},  # free-form: keyword arguments of pointclora.peft.make_peft_config
    "pretrain": None,  # free-form: run_pretrain config used when model.checkpoint is missing (the demo)
    "data": {
        "num_points": 1024,
        "augmentation": "scale_translate",  # scale_translate | rotate | none
        "batch_size": 32,  # global batch per optimizer step (split over processes and accumulation steps)
        "eval_batch_size": 64,
        "num_workers": 0,
        "cache_eval": True,  # keep val/test samples in memory after the first epoch (deterministic transforms)
        # Where per-epoch model selection happens: "auto" uses the dataset's val split when it has one, else carves
        # val_fraction of train off (fixed seed, same for every training seed); "carve" always carves; "test" selects on
        # the test split -- the field's comparability protocol, reported as such.
        "val_split": "auto",
        "val_fraction": 0.1,
        "val_seed": 0,
        # The test split: "dataset" (its own test split) | "carve" (a folder with only train/: test_fraction of train
        # held out, stratified by class, with test_seed; recorded in metrics.json as the test source)
        "test_split": "dataset",
        "test_fraction": 0.2,
        "test_seed": 0,
        # The up axis the model works in (x | y | z): null = the backbone's recorded one (else the dataset's); files
        # whose declared up axis differs are rotated into it. Resolved and recorded in every run's config.
        "up_axis": None,
        "fps_skip_near_origin": False,  # data-level FPS skips |p|^2 <= 1e-3 after the first point (pointnet2_ops)
        "validate": True,  # read every file once before training (cached fingerprint): bad rows fail before step 1
    },
    "optim": {
        "lr": 5e-4,
        "weight_decay": 0.05,
        "betas": [0.9, 0.999],
        "eps": 1e-8,
        "grad_clip": 10.0,  # max global grad norm; 0 or null disables
        "accumulation_steps": 1,
        "label_smoothing": 0.0,
        "no_decay": "ours",  # ours (1-D, biases, cls_token, cls_pos) | point-mae (weight decay on cls_pos)
        "seg_double_step": False,  # the official segmentation script's two optimizer steps per batch
    },
    "schedule": {
        "epochs": 300,
        "warmup_epochs": 10,
        "warmup_lr_init": 1e-6,
        "lr_min": 1e-6,
        # before_epoch (ours: lr(e) for all of epoch e) | per_step (the same curve at epoch + step / steps: timm's
        # t_in_epochs=False) | official (timm, stepped after each epoch: 301 epochs)
        "stepping": "before_epoch",
    },
    "train": {
        "seed": 0,
        "device": "auto",
        "amp": False,
        "amp_dtype": "auto",  # auto (bf16 on CPU, fp16 on CUDA) | bfloat16 | float16
        "eval_every": 1,
        "eval_test": False,  # also score the test split at every validation (tracks best-on-test; costs time)
        "vote": 0,  # >0: after training, also score the selected model with N-view voting on the test split
        "vote_mode": "single",  # single (one seeded pass) | max_over_repeats (the official best of vote_repeats)
        "vote_repeats": 299,
        "compile": False,  # torch.compile the model in place (opt-in: minutes of compile time on a CPU)
        "threads": None,  # main-process threads (default: the cores available minus data-loader workers)
        "deterministic": False,
        "log_every": 10,  # TensorBoard step scalars every N optimizer steps
        # Which epoch's weights are the result: "auto" (best on validation, unless the validation set is too small
        # to choose -- under 20 samples of some class or under 100 in all -- then the last epoch, with a warning),
        # "best" (always best on validation), "last" (always the last epoch)
        "select": "auto",
    },
}

#: Sections whose keys are not checked here: a fine-tuning config's ``pretrain`` is a whole pre-training config (the
#: demo), a pre-training config's holds the MAE options; the task that reads it checks it.
FREE_SECTIONS = ("pretrain",)

#: Keys that take one of a few words: a typo must not fall back to the default silently.
CHOICES: Dict[str, Tuple[str, ...]] = {
    "protocol": ("ours", "point-mae"),
    "optim.no_decay": ("ours", "point-mae"),
    "schedule.stepping": ("before_epoch", "per_step", "official"),
    "train.vote_mode": ("single", "max_over_repeats"),
    "train.amp_dtype": ("auto", "bfloat16", "float16"),
    "train.select": ("auto", "best", "last"),
    "data.test_split": ("dataset", "carve"),
    "data.up_axis": ("x", "y", "z"),
}

#: Folders searched for a bare ``_base_`` name, in order, after the folder matching the including key.
_SHELVES = ("configs", "datasets", "models")
_KEY_SHELF = {"dataset": "datasets", "model": "models", "pretrain": "configs"}


def search_roots() -> List[Path]:
    """Folders holding ``configs/``, ``datasets/``, ``models/``: the current directory, then this repository."""
    roots = [Path.cwd()]
    repo = Path(__file__).resolve().parent.parent
    if repo not in roots:
        roots.append(repo)
    env = os.environ.get("POINTCLORA_HOME")
    if env:
        roots.insert(0, Path(env))
    return roots


def resolve_config_path(name: PathLike, relative_to: Optional[PathLike] = None, key: Optional[str] = None) -> Path:
    """Find a config file: as given, relative to ``relative_to`` (a file or folder), then on the shelves.

    Raises ConfigError listing every place tried.
    """
    name = os.fspath(name)
    candidates: List[Path] = []
    p = Path(name).expanduser()
    here = None
    if relative_to is not None:
        base = Path(relative_to)
        here = base.parent if base.suffix else base
    bare = len(p.parts) == 1
    key_shelf = _KEY_SHELF.get(key) if key is not None else None
    shelves = ([key_shelf] if key_shelf else []) + [s for s in _SHELVES if s != key_shelf]
    names = [p] if p.suffix else [p, Path(name + ".yaml")]

    def on_shelves(which: Sequence[str]) -> List[Path]:
        return [root / shelf / n for root in search_roots() for shelf in which for n in names]

    if p.is_absolute():
        candidates.append(p)
    elif bare and key_shelf:
        # `dataset: {_base_: modelnet40.yaml}` means datasets/modelnet40.yaml even from configs/modelnet40.yaml
        candidates += on_shelves([key_shelf])
        candidates += [here / n for n in names] if here is not None else []
        candidates += [Path.cwd() / n for n in names] + on_shelves(shelves[1:])
    else:
        candidates += [here / n for n in names] if here is not None else []
        candidates += [Path.cwd() / n for n in names] + on_shelves(shelves)
    if relative_to is not None:  # a file never includes itself
        candidates = [c for c in candidates if not (c.is_file() and c.resolve() == Path(relative_to).resolve())]
    for c in candidates:
        if c.is_file():
            return c.resolve()
    tried = "\n  ".join(dict.fromkeys(str(c) for c in candidates))
    where = f" (included from {relative_to})" if relative_to else ""
    raise ConfigError(f"config file {name!r} not found{where}; tried:\n  {tried}")


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-3`` / ``5e-4`` as floats (YAML 1.1 wants ``1.0e-3`` and would give a string)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _yaml_load(text: Any) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def load_yaml(path: PathLike) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return _yaml_load(f)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML: {err}") from None


def merge(base: Any, update: Any) -> Any:
    """Deep merge: mappings merge key by key (``update`` wins); anything else is replaced by ``update``."""
    if isinstance(base, Mapping) and isinstance(update, Mapping):
        if update.get("_replace_"):
            return _strip_markers(copy.deepcopy(dict(update)))
        out = {k: copy.deepcopy(v) for k, v in base.items()}
        for k, v in update.items():
            if k == "_replace_":
                continue
            out[k] = merge(out[k], v) if k in out else copy.deepcopy(v)
        return out
    return copy.deepcopy(update)


def _expand(node: Any, source: Path, key: Optional[str], stack: Sequence[Path]) -> Any:
    """Replace every ``_base_`` below ``node`` (read from ``source``) by the files it names."""
    if not isinstance(node, Mapping):
        return node
    bases = node.get("_base_")
    result: Dict[str, Any] = {}
    if bases is not None:
        if isinstance(bases, (str, os.PathLike)):
            bases = [bases]
        if not isinstance(bases, list):
            raise ConfigError(f"{source}: _base_ must be a path or a list of paths, got {bases!r}")
        for base in bases:
            path = resolve_config_path(base, relative_to=source, key=key)
            if path in stack:
                chain = " -> ".join(str(s) for s in [*stack, path])
                raise ConfigError(f"{source}: circular _base_ chain: {chain}")
            loaded = load_yaml(path)
            if loaded is None:
                loaded = {}
            if not isinstance(loaded, Mapping):
                raise ConfigError(f"{path}: a config file must hold a mapping, got {type(loaded).__name__}")
            result = merge(result, _expand(loaded, path, key, [*stack, path]))
    # A nested `_base_` is looked up on the shelf of the nearest enclosing section key (dataset -> datasets/).
    own = {
        k: _expand(v, source, k if k in _KEY_SHELF else key, stack)
        for k, v in node.items()
        if k not in ("_base_", "_replace_")
    }
    out = merge(result, own)
    if node.get("_replace_"):  # keep the marker so the merge one level up replaces instead of merging
        out["_replace_"] = True
    return out


def _strip_markers(node: Any) -> Any:
    if isinstance(node, Mapping):
        return {k: _strip_markers(v) for k, v in node.items() if k != "_replace_"}
    return node


def load_config(path: PathLike, overrides: Iterable[str] = (), validate: bool = True) -> Dict[str, Any]:
    """Load ``path`` (a path or a bare name found on the shelves), expand ``_base_``, fill defaults, apply overrides.

    ``overrides`` are ``"a.b=value"`` strings; values are parsed as YAML (``lr=1e-3``, ``betas=[0.9,0.99]``,
    ``checkpoint=null``). Returns a plain dict that :func:`dump_config` writes back out.
    """
    src = resolve_config_path(path)
    raw = load_yaml(src) or {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{src}: a config file must hold a mapping, got {type(raw).__name__}")
    expanded = _strip_markers(_expand(raw, src, None, [src]))
    if validate:
        validate_config(expanded, source=str(src))
    cfg = merge(DEFAULTS, expanded)
    if not cfg.get("name"):
        cfg["name"] = src.stem
    cfg = apply_overrides(cfg, overrides, validate=validate)
    return cfg


def _parse_value(text: str) -> Any:
    try:
        return _yaml_load(text) if text.strip() else ""
    except yaml.YAMLError:
        return text


def apply_overrides(cfg: Dict[str, Any], overrides: Iterable[str], validate: bool = True) -> Dict[str, Any]:
    """Return a copy of ``cfg`` with each ``"a.b=value"`` applied; unknown keys raise ConfigError with a suggestion."""
    cfg = copy.deepcopy(cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected KEY=VALUE, e.g. optim.lr=1e-3")
        dotted, text = item.split("=", 1)
        dotted = dotted.strip()
        keys = dotted.split(".")
        if validate:
            _check_key(cfg, keys, source=f"--set {item}")
        node = cfg
        for k in keys[:-1]:
            if not isinstance(node.get(k), dict):
                node[k] = {}
            node = node[k]
        node[keys[-1]] = _parse_value(text)
        if validate:
            _check_choice(dotted, node[keys[-1]], source=f"--set {item}")
    return cfg


def _check_choice(dotted: str, value: Any, source: str) -> None:
    if dotted in CHOICES and value is not None and value not in CHOICES[dotted]:
        raise ConfigError(f"{source}: {dotted} must be one of {', '.join(CHOICES[dotted])}; got {value!r}")


#: section -> ``keys(cfg) -> valid keys or None (free-form)``, declared by the section's owner.
_SECTION_SCHEMAS: Dict[str, Callable[[Mapping[str, Any]], Optional[List[str]]]] = {}


def register_section_schema(section: str, keys: Callable[[Mapping[str, Any]], Optional[List[str]]]) -> None:
    """Declare the keys a top-level ``section`` may hold: ``keys(cfg)`` gets the whole config (a section's schema may
    depend on a sibling key, e.g. ``model.name`` or ``peft.method``) and returns the valid keys, or None when the
    section cannot be checked yet (its builder checks it then). Values below those keys are their builders' business.
    """
    _SECTION_SCHEMAS[section] = keys


def section_schemas() -> List[str]:
    """The sections whose owners declared a schema."""
    return sorted(_SECTION_SCHEMAS)


def _valid_keys(cfg: Mapping[str, Any], prefix: Sequence[str]) -> Optional[List[str]]:
    """Valid child keys below ``prefix`` or None when that section is free-form."""
    if prefix and prefix[0] in FREE_SECTIONS:
        return None
    if prefix and prefix[0] in _SECTION_SCHEMAS:
        if len(prefix) > 1:
            return None  # values of those keys (lists, mappings) are checked by their builders
        keys = _SECTION_SCHEMAS[prefix[0]](cfg)
        return None if keys is None else sorted({*keys, *_defaults_of(prefix[0]), "_replace_"})
    if prefix and prefix[0] in ("dataset", "peft", "model"):
        return None  # a section whose owner was not imported: its builder checks it
    node: Any = DEFAULTS
    for k in prefix:
        if not isinstance(node, Mapping) or k not in node:
            return None
        node = node[k]
    return sorted(node) if isinstance(node, Mapping) else None


def _defaults_of(section: str) -> List[str]:
    node = DEFAULTS.get(section)
    return list(node) if isinstance(node, Mapping) else []


def _unknown(key: str, valid: Sequence[str], where: str, source: str) -> ConfigError:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"{source}: unknown key {where!r}{hint} Valid keys here: {', '.join(valid)}")


def _check_key(cfg: Mapping[str, Any], keys: Sequence[str], source: str) -> None:
    for depth in range(len(keys)):
        valid = _valid_keys(cfg, keys[:depth])
        if valid is None:
            return
        if keys[depth] not in valid:
            raise _unknown(keys[depth], valid, ".".join(keys[: depth + 1]), source)


def validate_config(cfg: Mapping[str, Any], source: str = "config") -> None:
    """Raise ConfigError for any key not in the schema (free-form sections excepted)."""

    def walk(node: Mapping[str, Any], prefix: List[str]) -> None:
        valid = _valid_keys(cfg, prefix)
        if valid is None:
            return
        for k, v in node.items():
            if k not in valid:
                raise _unknown(k, valid, ".".join([*prefix, k]), source)
            _check_choice(".".join([*prefix, k]), v, source)
            default = _get(DEFAULTS, [*prefix, k])
            if isinstance(default, Mapping) and default and v is not None and not isinstance(v, Mapping):
                raise ConfigError(f"{source}: {'.'.join([*prefix, k])} must be a mapping, got {v!r}")
            if isinstance(v, Mapping) and (isinstance(default, Mapping) or k in FREE_SECTIONS):
                walk(v, [*prefix, k])

    walk(cfg, [])


def _get(node: Any, keys: Sequence[str]) -> Any:
    for k in keys:
        if not isinstance(node, Mapping) or k not in node:
            return None
        node = node[k]
    return node


def get_key(cfg: Mapping[str, Any], dotted: str, default: Any = None) -> Any:
    """``get_key(cfg, "optim.lr")``."""
    value = _get(cfg, dotted.split("."))
    return default if value is None else value


def dump_config(cfg: Mapping[str, Any]) -> str:
    """The resolved config as YAML text (block style, keys in schema order)."""
    return yaml.safe_dump(_plain(cfg), sort_keys=False, default_flow_style=False)


def save_config(cfg: Mapping[str, Any], path: PathLike) -> None:
    from .utils.atomic import atomic_write_text

    atomic_write_text(dump_config(cfg), path)


def config_from_string(text: str) -> Dict[str, Any]:
    data = _yaml_load(text) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"stored config is not a mapping: {type(data).__name__}")
    return data


def _plain(obj: Any) -> Any:
    """Tuples/paths -> YAML-safe lists/strings so the stored config loads with ``yaml.safe_load``."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj
