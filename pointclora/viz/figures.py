"""Pictures of clouds: plain, tokenizer patches, part labels (GT | prediction | errors), classification top-k.

Each function returns the whole picture as an ``(H, W, 3)`` uint8 array and writes it to ``out`` (PNG) when given.
Renders come from :func:`render_layers` (Open3D offscreen, or the matplotlib fallback); titles, legends and bars
are composed around them with matplotlib's object API (no pyplot, so the caller's backend is never touched).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .colors import ERROR_RED, GREY, color_by_height, distinct_colors, label_colors, patch_assignment
from .render import Layer, RenderOptions, render_layers

__all__ = [
    "as_points",
    "cloud_layers",
    "patch_layers",
    "render_cloud",
    "render_patches",
    "render_segmentation",
    "render_classification",
    "compose",
    "figure_to_array",
    "save_png",
    "topk_pairs",
]

PathLike = Union[str, Path]


def as_points(points, name: str = "points") -> np.ndarray:
    """``(N, 3+)`` array / tensor -> float64 ``(N, 3)`` xyz, with errors that say what was wrong."""
    if hasattr(points, "detach"):
        points = points.detach().cpu().numpy()
    arr = np.asarray(points)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2 or arr.shape[1] < 3:
        raise ValueError(f"{name} must have shape (N, 3) or (N, 3+), got {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    xyz = arr[:, :3].astype(np.float64)
    if not np.isfinite(xyz).all():
        raise ValueError(f"{name} contains NaN or inf coordinates")
    return xyz


def save_png(image: np.ndarray, out: PathLike) -> Path:
    from PIL import Image

    out = Path(out)
    if out.suffix.lower() != ".png":
        raise ValueError(f"output must be a .png file, got {str(out)!r}")
    out.parent.mkdir(parents=True, exist_ok=True)
    # optimize=True: docs pictures are committed, so a few % smaller for free matters.
    Image.fromarray(np.ascontiguousarray(image)).save(out, optimize=True)
    return out


def figure_to_array(fig) -> np.ndarray:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def compose(
    panels: Sequence[np.ndarray],
    titles: Optional[Sequence[str]] = None,
    suptitle: Optional[str] = None,
    legend: Optional[Sequence[Tuple[str, Tuple[float, float, float]]]] = None,
    side: Optional[Callable] = None,
    side_width: float = 0.8,
) -> np.ndarray:
    """Lay renders out in a row with titles, an optional legend under them and an optional chart on the right.

    ``side(ax)`` draws into an extra axes ``side_width`` x one panel's width wide (used for top-k bars).
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    dpi = 100
    h, w = panels[0].shape[:2]
    n = len(panels)
    extra = side_width if side is not None else 0.0
    top = 0.45 if (suptitle or titles) else 0.1
    top += 0.3 * (suptitle.count("\n") + 1) if suptitle else 0.0
    bottom = 0.45 if legend else 0.05
    fig_w = w * (n + extra) / dpi
    fig_h = h / dpi + top + bottom
    fig = Figure(figsize=(fig_w, fig_h), dpi=dpi, facecolor="white")
    for i, img in enumerate(panels):
        left = i * w / dpi / fig_w
        ax = fig.add_axes((left, bottom / fig_h, w / dpi / fig_w, h / dpi / fig_h))
        ax.imshow(img, interpolation="nearest")
        ax.set_axis_off()
        if titles and i < len(titles) and titles[i]:
            ax.set_title(titles[i], fontsize=11)
    if side is not None:
        pad = 0.28 * w / dpi
        left = (n * w / dpi + pad) / fig_w
        box_w, box_h = (extra * w / dpi - pad - 0.1) / fig_w, (h / dpi - 0.7) / fig_h
        ax = fig.add_axes((left, (bottom + 0.35) / fig_h, box_w, box_h))
        side(ax)
    if suptitle:
        fig.suptitle(suptitle, fontsize=13, y=1 - 0.12 / fig_h, va="top")
    if legend:
        handles = [Patch(facecolor=c, edgecolor="none", label=name) for name, c in legend]
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 8), frameon=False, fontsize=9)
    return figure_to_array(fig)


# ------------------------------------------------------------------------------------------------ layers
def cloud_layers(points, colors: Optional[np.ndarray] = None, opts: Optional[RenderOptions] = None) -> List[Layer]:
    opts = opts or RenderOptions()
    xyz = as_points(points)
    if colors is None:
        colors = color_by_height(xyz, up=opts.up, colormap=opts.colormap)
    return [Layer(xyz, colors, opts.point_size, "cloud")]


def patch_layers(
    points, num_groups: int = 64, group_size: int = 32, opts: Optional[RenderOptions] = None, grouping=None
) -> Tuple[List[Layer], dict]:
    """Layers showing the tokenizer's patches: each kNN group its own colour, FPS centres larger and black.

    ``grouping``: a :class:`pointclora.ops.Grouping` already computed for this cloud (batch of one); else
    :func:`pointclora.ops.group_points` is run with ``num_groups``/``group_size`` (the model's G and K).
    """
    opts = opts or RenderOptions()
    xyz = as_points(points)
    if grouping is None:
        import torch

        from ..ops import group_points

        if num_groups < 1 or group_size < 1:
            raise ValueError(f"num_groups and group_size must be >= 1, got {num_groups} and {group_size}")
        if num_groups > len(xyz) or group_size > len(xyz):
            raise ValueError(
                f"cannot take {num_groups} groups of {group_size} points from a cloud of {len(xyz)} points"
            )
        grouping = group_points(torch.as_tensor(xyz, dtype=torch.float32)[None], num_groups, group_size)
    centers = grouping.centers[0].detach().cpu().numpy().astype(np.float64)
    idx = grouping.idx[0].detach().cpu().numpy()
    assign = patch_assignment(xyz, centers, idx)
    palette = distinct_colors(len(centers))
    colors = np.tile(np.asarray(GREY), (len(xyz), 1))
    covered = assign >= 0
    colors[covered] = palette[assign[covered]]
    layers = [
        Layer(xyz, colors, opts.point_size, "patches"),
        Layer(centers, np.zeros_like(centers), opts.point_size * 1.8, "centers"),
    ]
    info = {"num_groups": len(centers), "group_size": idx.shape[1], "covered": float(covered.mean())}
    return layers, info


# ------------------------------------------------------------------------------------------------ pictures
def _finish(img: np.ndarray, out: Optional[PathLike]) -> np.ndarray:
    if out is not None:
        save_png(img, out)
    return img


def render_cloud(
    points, colors=None, opts: Optional[RenderOptions] = None, title: Optional[str] = None, out=None
) -> np.ndarray:
    """One cloud, coloured by height along ``opts.up`` unless ``colors (N, 3)`` are given."""
    opts = opts or RenderOptions()
    img = render_layers(cloud_layers(points, colors, opts), opts)
    if title:
        img = compose([img], suptitle=title)
    return _finish(img, out)


def render_patches(
    points,
    num_groups: int = 64,
    group_size: int = 32,
    opts: Optional[RenderOptions] = None,
    title: Optional[str] = None,
    grouping=None,
    side_by_side: bool = True,
    out=None,
) -> np.ndarray:
    """The tokenizer's view of a cloud: ``G`` FPS centres (black, large) and their kNN groups, one colour each.

    ``side_by_side`` puts the plain height-coloured cloud on the left for reference.
    """
    opts = opts or RenderOptions()
    xyz = as_points(points)
    layers, info = patch_layers(xyz, num_groups, group_size, opts, grouping)
    patches = render_layers(layers, opts, frame_points=xyz)
    panels, titles = [patches], [f"{info['num_groups']} patches x {info['group_size']} points"]
    if side_by_side:
        panels.insert(0, render_layers(cloud_layers(xyz, None, opts), opts))
        titles.insert(0, f"{len(xyz)} points (colour = height along {opts.up})")
    note = f"{info['covered']:.0%} of points fall in some patch; grey: in none"
    img = compose(panels, titles, suptitle=f"{title}\n{note}" if title else note)
    return _finish(img, out)


def render_segmentation(
    points,
    labels,
    pred=None,
    part_names: Optional[Mapping[int, str]] = None,
    opts: Optional[RenderOptions] = None,
    title: Optional[str] = None,
    pred_title: str = "prediction",
    out=None,
) -> np.ndarray:
    """Part labels; with ``pred``: ground truth | prediction | errors (wrong points red and larger, others grey).

    Both label panels share one colour per part id, listed in the legend (``part_names`` maps id -> name).
    """
    opts = opts or RenderOptions()
    xyz = as_points(points)
    labels = _as_labels(labels, len(xyz), "labels")
    pred = None if pred is None else _as_labels(pred, len(xyz), "prediction")
    mapping, (gt_colors, pred_colors) = label_colors(labels, pred)
    panels = [render_layers([Layer(xyz, gt_colors, opts.point_size, "gt")], opts)]
    titles = ["ground truth" if pred is not None else "part labels"]
    suptitle = title
    if pred is not None:
        panels.append(render_layers([Layer(xyz, pred_colors, opts.point_size, "pred")], opts))
        titles.append(pred_title)
        wrong = pred != labels
        # Correct points recede (light grey, small); wrong ones are drawn last, larger, so none hides.
        err_layers = [
            Layer(xyz[~wrong], np.tile(np.asarray(GREY), ((~wrong).sum(), 1)), opts.point_size, "right"),
            Layer(xyz[wrong], np.tile(np.asarray(ERROR_RED), (wrong.sum(), 1)), opts.point_size * 1.6, "wrong"),
        ]
        panels.append(render_layers(err_layers, opts, frame_points=xyz))
        acc = 1.0 - wrong.mean()
        titles.append(f"errors: {int(wrong.sum())}/{len(wrong)} points wrong")
        miou = _shape_miou(labels, pred, list(mapping))
        stats = f"point accuracy {acc:.1%}, shape mIoU {miou:.1%}"
        suptitle = f"{title}: {stats}" if title else stats
    names = part_names or {}
    legend = [(f"{names.get(i, 'part')} {i}" if i in names else f"part {i}", c) for i, c in mapping.items()]
    if pred is not None:
        legend.append(("wrong", ERROR_RED))
    img = compose(panels, titles, suptitle=suptitle, legend=legend)
    return _finish(img, out)


def render_classification(
    points,
    probs: Union[Sequence[float], Mapping[str, float], Sequence[Tuple[str, float]]],
    class_names: Optional[Sequence[str]] = None,
    label: Optional[Union[int, str]] = None,
    k: int = 5,
    opts: Optional[RenderOptions] = None,
    title: Optional[str] = None,
    out=None,
) -> np.ndarray:
    """A cloud with its top-``k`` predicted classes as bars; the title names the prediction and the true label.

    ``probs``: per-class probabilities aligned with ``class_names``, or ``{name: prob}``, or ``[(name, prob)]``.
    ``label``: the true class (index into ``class_names`` or a name), shown green when the top-1 matches.
    """
    opts = opts or RenderOptions()
    top = topk_pairs(probs, class_names, k)
    if isinstance(label, (int, np.integer)):
        if class_names is None or not 0 <= int(label) < len(class_names):
            raise ValueError(f"label index {label} needs class_names with more than {label} entries")
        label = class_names[int(label)]
    render = render_layers(cloud_layers(points, None, opts), opts)
    pred_name, pred_p = top[0]
    head = f"prediction: {pred_name} ({pred_p:.1%})"
    if label is not None:
        head += f"   |   true: {label}   " + ("[correct]" if pred_name == label else "[WRONG]")
    if title:
        head = f"{title}\n{head}"

    def bars(ax):
        names = [n for n, _ in top][::-1]
        vals = [p for _, p in top][::-1]
        colors = ["#2ca02c" if (label is not None and n == label) else "#1f77b4" for n in names]
        ax.barh(range(len(names)), vals, color=colors)
        ax.set_yticks(range(len(names)))
        ax.set_yticklabels(names, fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_xlabel("probability", fontsize=9)
        ax.set_title(f"top-{len(top)}", fontsize=10)
        for y, v in enumerate(vals):
            ax.text(min(v + 0.02, 0.8), y, f"{v:.2f}", va="center", fontsize=8)
        ax.tick_params(axis="x", labelsize=8)

    img = compose([render], suptitle=head, side=bars, side_width=0.9)
    return _finish(img, out)


# ------------------------------------------------------------------------------------------------ helpers
def topk_pairs(probs, class_names=None, k: int = 5) -> List[Tuple[str, float]]:
    """Normalise the accepted ``probs`` forms to ``[(name, prob)]`` sorted best first, ``k`` long at most."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if hasattr(probs, "detach"):
        probs = probs.detach().cpu().numpy()
    if isinstance(probs, Mapping):
        pairs = [(str(n), float(p)) for n, p in probs.items()]
    else:
        seq = list(probs)
        if seq and isinstance(seq[0], (tuple, list)):
            pairs = [(str(n), float(p)) for n, p in seq]
        else:
            arr = np.asarray(seq, dtype=np.float64).reshape(-1)
            if class_names is None:
                class_names = [str(i) for i in range(len(arr))]
            if len(class_names) != len(arr):
                raise ValueError(f"{len(arr)} probabilities but {len(class_names)} class names")
            pairs = list(zip(map(str, class_names), arr.tolist()))
    if not pairs:
        raise ValueError("no class probabilities given")
    pairs.sort(key=lambda t: -t[1])
    return pairs[:k]


def _as_labels(labels, n: int, name: str) -> np.ndarray:
    if hasattr(labels, "detach"):
        labels = labels.detach().cpu().numpy()
    arr = np.asarray(labels).reshape(-1)
    if len(arr) != n:
        raise ValueError(f"{name}: {len(arr)} values for {n} points")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            bad = arr[~np.isfinite(arr) | (arr != np.round(arr))][0]
            raise ValueError(f"{name} must be integer part ids; found {bad!r}")
    return arr.astype(np.int64)


def _shape_miou(labels: np.ndarray, pred: np.ndarray, parts: List[int]) -> float:
    """ShapeNetPart's per-shape mIoU: mean over the category's parts, a part absent from both counts as 1."""
    ious = []
    for p in parts:
        inter = np.sum((labels == p) & (pred == p))
        union = np.sum((labels == p) | (pred == p))
        ious.append(1.0 if union == 0 else inter / union)
    return float(np.mean(ious)) if ious else 0.0
