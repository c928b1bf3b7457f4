"""Linear probe of a frozen backbone: the field's measure of pre-training quality (Point-BERT / Point-MAE report a
linear SVM on frozen ModelNet40 features).

Steps: :func:`extract_features` runs the frozen encoder over a dataset and pools its tokens into fixed-size vectors
(``cls_max`` = ``[cls, max over patch tokens]`` as the classifier head sees them, ``mean_max`` = ``[mean, max]`` over
patch tokens; optionally the same for intermediate blocks); :func:`fit_linear_probe` standardises them, picks the
inverse regularisation ``C`` on a stratified validation carve of the labelled set, refits on all labelled shapes and
scores the test set (overall and mean class accuracy). :func:`probe_backbone` does both for a backbone *and* for a
randomly initialised backbone of the same architecture, because random features of a point transformer are a strong
baseline (a pre-training that does not beat them has taught the encoder nothing a linear classifier can use).

:func:`make_probe_callback` returns ``callback(encoder) -> {metric: value}`` for a pre-training loop (every N epochs):
features of the test set are recomputed each call; the random baseline is computed once and cached.

scikit-learn does the fitting (``LogisticRegression`` with lbfgs, or ``LinearSVC``).
"""

from __future__ import annotations

import copy
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

__all__ = [
    "POOLINGS",
    "extract_features",
    "fit_linear_probe",
    "few_label_indices",
    "random_like",
    "probe_backbone",
    "make_probe_callback",
    "feature_stats",
    "points_of",
]

#: Pooled feature names :func:`extract_features` can return.
POOLINGS = ("cls_max", "mean_max", "tokens_mean_max")

#: Default grid of the inverse regularisation strength (features are standardised first).
DEFAULT_CS = (0.001, 0.01, 0.1, 1.0)

DataLike = Union[torch.utils.data.Dataset, torch.Tensor, np.ndarray]


def _require_sklearn():
    try:
        import sklearn  # noqa: F401
    except ImportError as err:  # pragma: no cover - sklearn is an install requirement
        raise ImportError("the linear probe needs scikit-learn: pip install scikit-learn") from err


def points_of(data: DataLike, index: Sequence[int]) -> torch.Tensor:
    """``(B, N, 3)`` float points of ``data[index]``: a tensor/array ``(S, N, 3+)`` or a dataset of samples whose
    ``"points"`` (or first element) is ``(N, 3+)``; samples must share N (use a ``num_points`` dataset)."""
    if isinstance(data, (torch.Tensor, np.ndarray)):
        pts = torch.as_tensor(data[np.asarray(index)])
    else:
        rows = []
        for i in index:
            s = data[int(i)]
            p = s["points"] if isinstance(s, Mapping) else s[0]
            rows.append(torch.as_tensor(p))
        pts = torch.stack(rows)
    return pts[..., :3].float()


def _encoder_of(model: nn.Module) -> nn.Module:
    """The :class:`PointTransformerEncoder` inside a classifier, a PEFT wrapper or a ``PointMAEPretrain``."""
    if hasattr(model, "MAE_encoder"):
        return model.MAE_encoder
    base = getattr(model, "base_model", None)
    if base is not None and hasattr(base, "forward_blocks"):
        return base
    if not hasattr(model, "tokenize") or not hasattr(model, "forward_blocks"):
        raise TypeError(f"{type(model).__name__} is not a point-transformer encoder (no tokenize/forward_blocks)")
    return model


@torch.no_grad()
def extract_features(
    model: nn.Module,
    data: DataLike,
    batch_size: int = 64,
    device: Union[str, torch.device] = "cpu",
    layers: Optional[Sequence[int]] = None,
    poolings: Sequence[str] = ("cls_max", "mean_max"),
) -> Dict[str, np.ndarray]:
    """Frozen pooled features of every sample of ``data``.

    Args:
        model: an encoder (``PointTransformer[Encoder]``, a ``PointMAEPretrain``, a PEFT-wrapped model).
        data: ``(S, N, 3)`` tensor/array or a dataset of ``{"points": (N, 3+)}`` samples.
        layers: 0-based block indices whose (normed) outputs are pooled too (``mean_max@i`` keys); the last block is
            always pooled under the plain names.
        poolings: which of :data:`POOLINGS` to return. ``cls_max`` is skipped for an encoder without a cls token.
            ``tokens_mean_max`` pools the mini-PointNet patch tokens (before any transformer block).

    Returns:
        ``{name: float32 (S, D)}``; ``D`` = 2C for each pooling.
    """
    unknown = [p for p in poolings if p not in POOLINGS]
    if unknown:
        raise ValueError(f"unknown pooling {unknown[0]!r}; expected some of {POOLINGS}")
    enc = _encoder_of(model)
    was_training = enc.training
    enc.eval().to(device)
    n = len(data)
    wanted = sorted(set(layers or ()) | {enc.depth - 1})
    out: Dict[str, List[np.ndarray]] = {}
    try:
        for start in range(0, n, batch_size):
            pts = points_of(data, range(start, min(n, start + batch_size))).to(device)
            tokens, pos, _ = enc.tokenize(pts)
            p = enc.num_prefix_tokens
            feats: Dict[str, torch.Tensor] = {}
            if "tokens_mean_max" in poolings:
                t = tokens[:, p:]
                feats["tokens_mean_max"] = torch.cat([t.mean(1), t.amax(1)], -1)
            for layer, x in zip(wanted, enc.forward_blocks(tokens, pos, return_layers=wanted)):
                suffix = "" if layer == enc.depth - 1 else f"@{layer}"
                patches = x[:, p:]
                if "mean_max" in poolings:
                    feats["mean_max" + suffix] = torch.cat([patches.mean(1), patches.amax(1)], -1)
                if "cls_max" in poolings and p:
                    feats["cls_max" + suffix] = torch.cat([x[:, 0], patches.amax(1)], -1)
            for k, v in feats.items():
                out.setdefault(k, []).append(v.float().cpu().numpy())
    finally:
        enc.train(was_training)
    return {k: np.concatenate(v) for k, v in out.items()}


def few_label_indices(labels: np.ndarray, per_class: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of ``per_class`` random samples of every class (all of a class that has fewer)."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    idx = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        idx.extend(rng.choice(members, min(per_class, len(members)), replace=False).tolist())
    return np.sort(np.asarray(idx, dtype=np.int64))


def _stratified_carve(labels: np.ndarray, fraction: float, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """(fit indices, val indices): ``fraction`` of each class (at least one, never the whole class) held out."""
    rng = np.random.default_rng(seed)
    fit, val = [], []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        k = min(len(members) - 1, max(1, int(round(len(members) * fraction)))) if len(members) > 1 else 0
        val.extend(members[:k].tolist())
        fit.extend(members[k:].tolist())
    return np.sort(np.asarray(fit, dtype=np.int64)), np.sort(np.asarray(val, dtype=np.int64))


def _make_classifier(kind: str, C: float, seed: int):
    if kind == "logreg":
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=C, max_iter=2000, random_state=seed)
    if kind == "svm":
        from sklearn.svm import LinearSVC

        return LinearSVC(C=C, max_iter=5000, random_state=seed)
    raise ValueError(f"probe classifier must be 'logreg' or 'svm', got {kind!r}")


def _accuracies(pred: np.ndarray, y: np.ndarray) -> Tuple[float, float]:
    oa = float((pred == y).mean())
    per_class = [float((pred[y == c] == c).mean()) for c in np.unique(y)]
    return 100.0 * oa, 100.0 * float(np.mean(per_class))


def fit_linear_probe(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    Cs: Sequence[float] = DEFAULT_CS,
    val_fraction: float = 0.2,
    classifier: str = "logreg",
    seed: int = 0,
) -> Dict[str, float]:
    """Standardise, choose ``C`` on a stratified ``val_fraction`` carve of the training features, refit on all of
    them, score the test features.

    ``train_x (S, D)``, ``train_y (S,)`` int labels. Returns ``{"oa", "macc"}`` in percent, the chosen ``"C"`` and
    its ``"val_oa"``.
    """
    _require_sklearn()
    from sklearn.preprocessing import StandardScaler

    train_x, test_x = np.asarray(train_x, np.float64), np.asarray(test_x, np.float64)
    train_y, test_y = np.asarray(train_y), np.asarray(test_y)
    if train_x.ndim != 2 or len(train_x) != len(train_y):
        raise ValueError(f"train features must be (S, D) with S = len(labels); got {train_x.shape} / {train_y.shape}")
    if len(np.unique(train_y)) < 2:
        raise ValueError("the probe needs at least two classes among the training labels")
    fit_idx, val_idx = _stratified_carve(train_y, val_fraction, seed)
    best_C, best_val = Cs[0], -1.0
    if len(Cs) > 1 and len(val_idx) and len(np.unique(train_y[fit_idx])) > 1:
        scaler = StandardScaler().fit(train_x[fit_idx])
        xf, xv = scaler.transform(train_x[fit_idx]), scaler.transform(train_x[val_idx])
        for C in Cs:
            clf = _make_classifier(classifier, C, seed).fit(xf, train_y[fit_idx])
            acc = 100.0 * float((clf.predict(xv) == train_y[val_idx]).mean())
            if acc > best_val + 1e-9:  # ties keep the stronger regularisation (smaller C, listed first)
                best_C, best_val = C, acc
    scaler = StandardScaler().fit(train_x)
    clf = _make_classifier(classifier, best_C, seed).fit(scaler.transform(train_x), train_y)
    oa, macc = _accuracies(clf.predict(scaler.transform(test_x)), test_y)
    return {"oa": oa, "macc": macc, "C": float(best_C), "val_oa": best_val}


def random_like(model: nn.Module, seed: int = 0) -> nn.Module:
    """A freshly initialised encoder of the same architecture as ``model``'s encoder (same constructor arguments).

    The cls token, when the architecture has one, gets the default truncated-normal init; the weights depend only on
    ``seed``.
    """
    enc = _encoder_of(model)
    from .backbone import PointTransformerEncoder

    kwargs = dict(
        trans_dim=enc.trans_dim,
        depth=enc.depth,
        num_heads=enc.num_heads,
        mlp_ratio=enc.blocks[0].mlp.fc1.out_features / enc.trans_dim if hasattr(enc.blocks[0], "mlp") else 4.0,
        num_groups=enc.num_groups,
        group_size=enc.group_size,
        encoder_dims=enc.encoder_dims,
        encoder_hidden_dims=_hidden_dims(enc),
        cls_token=enc.cls_token is not None,
        pos_every_block=enc.pos_every_block,
        qkv_bias=enc.blocks[0].attn.qkv.bias is not None,
        drop_path_rate=0.0,
    )
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        fresh = PointTransformerEncoder(**kwargs)
    finally:
        torch.random.set_rng_state(state)
    return fresh


def _hidden_dims(enc: nn.Module) -> Tuple[int, int, int]:
    first, second = enc.encoder.first_conv, enc.encoder.second_conv
    return (first[0].out_channels, first[3].out_channels, second[0].out_channels)


def _with_cls(model: nn.Module, seed: int) -> nn.Module:
    """An encoder without a cls token (a Point-MAE encoder) gets one, initialised as fine-tuning would (seeded), so
    ``cls_max`` is the feature a classifier built on this backbone starts from."""
    enc = _encoder_of(model)
    if enc.cls_token is not None:
        return enc
    enc = copy.deepcopy(enc)
    g = torch.Generator().manual_seed(seed)
    C = enc.trans_dim
    enc.cls_token = nn.Parameter(torch.nn.init.trunc_normal_(torch.empty(1, 1, C), std=0.02, generator=g))
    enc.cls_pos = nn.Parameter(torch.nn.init.trunc_normal_(torch.empty(1, 1, C), std=0.02, generator=g))
    return enc


def feature_stats(x: np.ndarray) -> Dict[str, float]:
    """Collapse diagnostics of a feature matrix ``(S, D)``: effective rank (exp of the entropy of the normalised
    singular values of the centred features), the rank holding 99 % of the variance, and the mean / minimum
    per-dimension standard deviation."""
    x = np.asarray(x, np.float64)
    xc = x - x.mean(0, keepdims=True)
    s = np.linalg.svd(xc, compute_uv=False)
    p = s / max(s.sum(), 1e-12)
    var = s**2 / max((s**2).sum(), 1e-12)
    std = x.std(0)
    return {
        "eff_rank": float(np.exp(-(p[p > 0] * np.log(p[p > 0])).sum())),
        "rank99": int(np.searchsorted(np.cumsum(var), 0.99) + 1),
        "std_mean": float(std.mean()),
        "std_min": float(std.min()),
    }


def _probe_features(
    train_f: Mapping[str, np.ndarray],
    train_y: np.ndarray,
    test_f: Mapping[str, np.ndarray],
    test_y: np.ndarray,
    per_class: Sequence[Optional[int]],
    draws: int,
    Cs: Sequence[float],
    classifier: str,
    seed: int,
) -> Dict[str, float]:
    out: Dict[str, float] = {}
    for name in train_f:
        for k in per_class:
            tag = f"{name}/{'all' if k is None else f'{k}pc'}"
            runs = []
            for d in range(1 if k is None else draws):
                idx = np.arange(len(train_y)) if k is None else few_label_indices(train_y, k, seed + d)
                runs.append(
                    fit_linear_probe(
                        train_f[name][idx], train_y[idx], test_f[name], test_y, Cs, classifier=classifier, seed=seed + d
                    )
                )
            out[tag + "/oa"] = float(np.mean([r["oa"] for r in runs]))
            out[tag + "/macc"] = float(np.mean([r["macc"] for r in runs]))
            if len(runs) > 1:
                out[tag + "/oa_std"] = float(np.std([r["oa"] for r in runs]))
            out[tag + "/C"] = float(runs[0]["C"])
    return out


def probe_backbone(
    model: nn.Module,
    train: DataLike,
    train_y: np.ndarray,
    test: DataLike,
    test_y: np.ndarray,
    per_class: Sequence[Optional[int]] = (None, 10),
    draws: int = 3,
    poolings: Sequence[str] = ("cls_max", "mean_max"),
    layers: Optional[Sequence[int]] = None,
    Cs: Sequence[float] = DEFAULT_CS,
    classifier: str = "logreg",
    seed: int = 0,
    batch_size: int = 64,
    device: Union[str, torch.device] = "cpu",
    with_random: bool = True,
) -> Dict[str, Dict[str, float]]:
    """Probe ``model`` and (``with_random``) a random encoder of the same architecture side by side.

    Args:
        per_class: label budgets; ``None`` = all training labels, ``k`` = ``k`` random labels per class averaged over
            ``draws`` draws.
        seed: the random backbone's init seed, the few-label draws and the validation carve.

    Returns:
        ``{"backbone": metrics, "random": metrics}``; metric keys ``"<pooling>/<all|10pc>/<oa|macc|C>"`` plus
        ``"<pooling>/stats/<eff_rank|...>"`` (test-set features, :func:`feature_stats`) and ``"time_s"``.
    """
    train_y, test_y = np.asarray(train_y), np.asarray(test_y)
    results: Dict[str, Dict[str, float]] = {}
    candidates = [("backbone", _with_cls(model, seed))]
    if with_random:  # built from the cls-equipped encoder so both rows pool the same features
        candidates.append(("random", random_like(candidates[0][1], seed)))
    for tag, enc in candidates:
        t0 = time.time()
        tr = extract_features(enc, train, batch_size, device, layers, poolings)
        te = extract_features(enc, test, batch_size, device, layers, poolings)
        metrics = _probe_features(tr, train_y, te, test_y, per_class, draws, Cs, classifier, seed)
        for name, x in te.items():
            metrics.update({f"{name}/stats/{k}": v for k, v in feature_stats(x).items()})
        metrics["time_s"] = time.time() - t0
        results[tag] = metrics
    return results


def make_probe_callback(
    train: DataLike,
    train_y: np.ndarray,
    test: DataLike,
    test_y: np.ndarray,
    **probe_kwargs: Any,
) -> Callable[[nn.Module], Dict[str, float]]:
    """``callback(model) -> {"probe/<pooling>/<all|10pc>/oa": ..., "probe_random/...": ..., "probe/gain/...": ...}``
    for a pre-training loop: call it every N epochs with the ``PointMAEPretrain`` (or its ``MAE_encoder``) and log
    the flat dict (e.g. ``writer.add_scalar(key, value, epoch)``). ``probe_kwargs`` are :func:`probe_backbone`'s
    (``per_class``, ``draws``, ``poolings``, ``layers``, ``Cs``, ``classifier``, ``seed``, ``batch_size``,
    ``device``). The random baseline is computed on the first call and cached; ``probe/gain/...`` = backbone − random
    OA. Model modes are restored."""
    cache: Dict[str, Dict[str, float]] = {}

    def callback(model: nn.Module) -> Dict[str, float]:
        res = probe_backbone(model, train, train_y, test, test_y, with_random="random" not in cache, **probe_kwargs)
        if "random" in res:
            cache["random"] = res["random"]
        out = {f"probe/{k}": v for k, v in res["backbone"].items()}
        out.update({f"probe_random/{k}": v for k, v in cache["random"].items()})
        for k, v in res["backbone"].items():
            if k.endswith("/oa") and k in cache["random"]:
                out[f"probe/gain/{k}"] = v - cache["random"][k]
        return out

    return callback
