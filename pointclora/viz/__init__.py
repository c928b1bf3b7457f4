"""Pictures of point clouds and results, headless: Open3D offscreen rendering (matplotlib fallback) + charts.

Open3D and matplotlib are the ``viz`` extra (``pip install 'pointclora[viz]'``); they are imported when a picture
is drawn, so ``import pointclora.viz`` works without them.
"""

from .charts import (
    default_metric_panels,
    fewshot_stats,
    load_runs,
    plot_fewshot,
    plot_miou,
    plot_run_curves,
    read_history,
)
from .colors import color_by_height, distinct_colors, label_colors, patch_assignment
from .figures import (
    as_points,
    cloud_layers,
    compose,
    patch_layers,
    render_classification,
    render_cloud,
    render_patches,
    render_segmentation,
    save_png,
    topk_pairs,
)
from .render import Layer, RenderOptions, compute_camera, has_display, render_layers, resolve_backend, show_layers

__all__ = [
    "RenderOptions",
    "Layer",
    "compute_camera",
    "render_layers",
    "resolve_backend",
    "has_display",
    "show_layers",
    "color_by_height",
    "distinct_colors",
    "label_colors",
    "patch_assignment",
    "as_points",
    "cloud_layers",
    "patch_layers",
    "compose",
    "render_cloud",
    "render_patches",
    "render_segmentation",
    "render_classification",
    "save_png",
    "topk_pairs",
    "read_history",
    "load_runs",
    "default_metric_panels",
    "plot_run_curves",
    "fewshot_stats",
    "plot_fewshot",
    "plot_miou",
]
