"""Adapter configurations: the base dataclasses every method's config extends, validated on construction,
round-tripping through JSON/YAML. Each method's own dataclass sits in its file beside its layer and method class:
``CLoRAConfig`` in :mod:`pointclora.peft.clora`, ``LoRAConfig`` in :mod:`pointclora.peft.lora`, ``FullConfig`` /
``LinearConfig`` / ``NoneConfig`` in :mod:`pointclora.peft.simple` (still importable from here).

``None`` defaults come from the model at injection (``inject_adapters`` records the resolved config):
``target_modules`` from ``model.default_adapter_targets``, ``train_modules`` from ``model.default_train_modules``
(the classifier's head + ``cls_token`` + ``cls_pos``; the segmentation head), else its ``head_modules``.

Target matching (``target_modules``, ``exclude_modules``, ``train_modules``): an entry ``e`` matches a module (or
parameter) name ``n`` when ``n == e``, when ``n`` ends with ``"." + e`` (suffix: ``"attn.qkv"`` matches
``"blocks.3.attn.qkv"``), or, for entries written ``"re:<pattern>"``, when ``re.fullmatch(pattern, n)``.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, List, Mapping, Optional, Tuple, Type

from ..config import register_section_schema

__all__ = [
    "PeftConfig",
    "AdapterConfig",
    "LowRankConfig",
    "PeftConfigError",
    "DEFAULT_METHOD",
    "make_peft_config",
    "peft_config_from_dict",
]


#: The method used when a config names none (the paper's method).
DEFAULT_METHOD = "clora"


class PeftConfigError(ValueError):
    """An adapter configuration value is invalid."""


def _as_str_tuple(name: str, value: Any) -> Tuple[str, ...]:
    if isinstance(value, str):
        value = (value,)
    try:
        out = tuple(value)
    except TypeError:
        raise PeftConfigError(f"{name} must be a list of strings, got {type(value).__name__} {value!r}") from None
    for item in out:
        if not isinstance(item, str) or not item:
            raise PeftConfigError(f"{name} must contain non-empty strings, got {item!r} in {list(out)!r}")
        if item.startswith("re:"):
            try:
                re.compile(item[3:])
            except re.error as err:
                raise PeftConfigError(f"{name} entry {item!r} is not a valid regular expression: {err}") from None
    return out


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PeftConfigError(f"{name} must be an integer >= {minimum}, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise PeftConfigError(f"{name} must be an integer >= {minimum}, got {value}")
    return value


def _check_float(name: str, value: Any, low: float, high: Optional[float] = None, high_open: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PeftConfigError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    value = float(value)
    bad = value < low or (high is not None and (value >= high if high_open else value > high))
    if bad or value != value:
        bound = f"in [{low}, {high}{')' if high_open else ']'}" if high is not None else f">= {low}"
        raise PeftConfigError(f"{name} must be {bound}, got {value}")
    return value


def _as_optional_str_tuple(name: str, value: Any) -> Optional[Tuple[str, ...]]:
    return None if value is None else _as_str_tuple(name, value)


@dataclass
class PeftConfig:
    """Base class. ``train_modules``: module/parameter names trained besides the adapters (see module docstring);
    ``None`` takes the model's ``default_train_modules``."""

    method: ClassVar[str] = ""
    train_modules: Optional[Tuple[str, ...]] = None

    def __post_init__(self) -> None:
        self.train_modules = _as_optional_str_tuple("train_modules", self.train_modules)
        self.validate()

    def validate(self) -> None:
        """Subclasses check their own fields; raise :class:`PeftConfigError` naming the key and the expectation."""

    # --- serialisation ---------------------------------------------------------------------------------------------
    def to_dict(self) -> Dict[str, Any]:
        """Plain JSON/YAML-safe dict with ``method`` first; tuples become lists."""
        out: Dict[str, Any] = {"method": self.method}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PeftConfig:
        """Inverse of :meth:`to_dict`. On the base class, dispatches on ``data['method']``."""
        data = dict(data)
        method = data.pop("method", None)
        if cls is PeftConfig:
            return make_peft_config(method or DEFAULT_METHOD, **data)
        if method is not None and method != cls.method:
            raise PeftConfigError(f"config has method={method!r} but {cls.__name__} is method {cls.method!r}")
        return _construct(cls, data)

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_json(cls, text: str) -> PeftConfig:
        return cls.from_dict(json.loads(text))

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str) -> PeftConfig:
        import yaml

        return cls.from_dict(yaml.safe_load(text))


@dataclass
class AdapterConfig(PeftConfig):
    """Fields of every method that wraps ``nn.Linear`` layers.

    Args:
        target_modules / exclude_modules: which ``nn.Linear`` layers get an adapter (exact / suffix / ``re:`` regex);
            ``None`` takes the model's ``default_adapter_targets`` (q/k/v, proj, fc1, fc2 of every block).
        dropout: dropout on the adapter input.
        split_qkv: treat a fused ``qkv`` Linear (out = 3·in) as three LRMs q, k, v of shape in×in.
    """

    target_modules: Optional[Tuple[str, ...]] = None
    exclude_modules: Tuple[str, ...] = ()
    dropout: float = 0.0
    split_qkv: bool = True

    def validate(self) -> None:
        super().validate()
        self.dropout = _check_float("dropout", self.dropout, 0.0, 1.0)
        self.target_modules = _as_optional_str_tuple("target_modules", self.target_modules)
        if self.target_modules is not None and not self.target_modules:
            raise PeftConfigError("target_modules must name at least one layer, got an empty list")
        self.exclude_modules = _as_str_tuple("exclude_modules", self.exclude_modules)
        if not isinstance(self.split_qkv, bool):
            raise PeftConfigError(f"split_qkv must be true or false, got {self.split_qkv!r}")


@dataclass
class LowRankConfig(AdapterConfig):
    """Fields shared by the low-rank methods (CLoRA, LoRA): rank ``r`` and ``alpha`` (``s = alpha / r``)."""

    r: int = 8
    alpha: Optional[float] = None

    def validate(self) -> None:
        super().validate()
        _check_int("r", self.r, 1)
        if self.alpha is None:
            self.alpha = float(self.r)  # CLORA.md: alpha = r, so the scaling s = alpha / r = 1
        self.alpha = _check_float("alpha", self.alpha, 0.0)
        if self.alpha == 0.0:
            raise PeftConfigError("alpha must be > 0 (scaling s = alpha / r would switch the adapter off), got 0")

    @property
    def scaling(self) -> float:
        """``s = alpha / r``."""
        return float(self.alpha) / self.r


def _construct(cls: Type[PeftConfig], kwargs: Mapping[str, Any]) -> PeftConfig:
    names = [f.name for f in dataclasses.fields(cls)]
    for key in kwargs:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise PeftConfigError(
                f"unknown option {key!r} for method {cls.method!r}{hint} Valid options: {', '.join(names)}"
            )
    return cls(**kwargs)


def make_peft_config(method: Any = DEFAULT_METHOD, **kwargs: Any) -> PeftConfig:
    """Build the config of a registered method (``list_peft_methods()``: clora, lora, full, linear, none, ...) from
    flat kwargs; a config passed as ``method`` is returned (updated with ``kwargs``)."""
    if isinstance(method, PeftConfig):
        if kwargs:
            merged = {k: v for k, v in {**method.to_dict(), **kwargs}.items() if k != "method"}
            return _construct(type(method), merged)
        return method
    from .registry import get_method_class  # the registry imports this module

    return _construct(get_method_class(method).config_class, kwargs)


def peft_option_names(method: str) -> Optional[List[str]]:
    """The config fields method ``method`` accepts, or None for an unknown method (reported when it is built)."""
    from .registry import get_method_class  # the registry imports this module

    try:
        cls = get_method_class(str(method)).config_class
    except (KeyError, ValueError):
        return None
    return [f.name for f in dataclasses.fields(cls)]


def _peft_section_keys(cfg: Mapping[str, Any]) -> Optional[List[str]]:
    """The ``peft`` schema: the method's config fields (``method`` picks it; None for an unknown method, which is
    reported with a suggestion when it is built)."""
    section = cfg.get("peft") if isinstance(cfg.get("peft"), Mapping) else {}
    names = peft_option_names(str(section.get("method", DEFAULT_METHOD)))
    return None if names is None else sorted({"method", *names})


def peft_config_from_dict(data: Mapping[str, Any]) -> PeftConfig:
    """``{'method': 'clora', 'r': 8, ...}`` -> config (``method`` defaults to ``clora``)."""
    return PeftConfig.from_dict(data)


register_section_schema("peft", _peft_section_keys)


_LowRankConfig = LowRankConfig  # the name it had before it was public

#: Configs that moved to their method's file, still importable from here (``from pointclora.peft.config import ...``).
_MOVED = {"CLoRAConfig": "clora", "LoRAConfig": "lora", "FullConfig": "simple", "LinearConfig": "simple",
          "NoneConfig": "simple"}  # fmt: skip


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        import importlib

        return getattr(importlib.import_module(f"{__package__}.{_MOVED[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
