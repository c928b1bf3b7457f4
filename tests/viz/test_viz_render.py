"""Point-cloud pictures, rendered headless with each backend, checked pixel by pixel."""

import numpy as np
import pytest
from viz_helpers import assert_nontrivial, color_mask, distinct_colors, ink_fraction, load_png, sphere

from pointclora import viz
from pointclora.viz.colors import ERROR_RED, GREY, label_colors, patch_assignment
from pointclora.viz.render import _project, compute_camera

SMALL = dict(width=240, height=200, point_size=4)


def test_render_cloud_png_is_nontrivial(tmp_path, backend):
    out = tmp_path / "cloud.png"
    img = viz.render_cloud(sphere(), opts=viz.RenderOptions(backend=backend, **SMALL), out=out)
    png = load_png(out)
    assert png.shape == img.shape == (200, 240, 3)
    assert_nontrivial(png, min_colors=30)


def test_height_colouring_runs_bottom_to_top(backend):
    """Default colours follow the up axis: the top of a sphere is yellow-ish, the bottom purple (viridis)."""
    img = viz.render_cloud(sphere(4000), opts=viz.RenderOptions(backend=backend, elevation=0, **SMALL))
    ink = img.min(axis=2) < 235
    rows = np.where(ink.any(axis=1))[0]
    top = img[rows[:5]][ink[rows[:5]]].astype(float).mean(0)
    bottom = img[rows[-5:]][ink[rows[-5:]]].astype(float).mean(0)
    # viridis: high end (253, 231, 37) is red+green heavy, low end (68, 1, 84) has more blue than green.
    assert top[1] > 150 and top[2] < 120, top
    assert bottom[1] < 100 and bottom[2] > bottom[1], bottom


def test_points_land_where_they_are(backend):
    """A red blob at +x and a blue blob at -x, seen from the front with y up: red right, blue left, upper one up."""
    rng = np.random.default_rng(0)
    red = rng.normal(scale=0.05, size=(300, 3)) + [1.0, 0.5, 0]
    blue = rng.normal(scale=0.05, size=(300, 3)) + [-1.0, -0.5, 0]
    layers = [
        viz.Layer(red, np.tile([1.0, 0, 0], (300, 1)), 5),
        viz.Layer(blue, np.tile([0, 0, 1.0], (300, 1)), 5),
    ]
    img = viz.render_layers(layers, viz.RenderOptions(backend=backend, azimuth=0, elevation=0, **SMALL))
    r = color_mask(img, (1, 0, 0), tol=60)
    b = color_mask(img, (0, 0, 1), tol=60)
    assert r.sum() > 30 and b.sum() > 30
    ry, rx = np.argwhere(r).mean(0)
    by, bx = np.argwhere(b).mean(0)
    assert rx > 240 * 0.6 and bx < 240 * 0.4, (rx, bx)
    assert ry < by  # image rows grow downwards


def test_camera_keeps_every_point_in_view():
    pts = np.random.default_rng(1).normal(size=(500, 3)) * [3, 0.2, 1]
    for az, el, w, h in [(45, 25, 300, 200), (0, 0, 200, 300), (90, 60, 256, 256), (10, 89.9, 300, 200)]:
        opts = viz.RenderOptions(width=w, height=h, azimuth=az, elevation=el)
        xy, depth = _project(pts, compute_camera(pts, opts), w, h)
        assert (depth > 0).all()
        assert (xy[:, 0] >= 0).all() and (xy[:, 0] <= w).all() and (xy[:, 1] >= 0).all() and (xy[:, 1] <= h).all()
        # ... and fills the view along at least one side (tight framing, not the bounding sphere).
        span = max(np.ptp(xy[:, 0]) / w, np.ptp(xy[:, 1]) / h)
        assert span > 0.75, (az, el, span)


def test_patches_picture_colours_each_group(tmp_path, backend):
    out = tmp_path / "patches.png"
    img = viz.render_patches(sphere(1500), num_groups=16, group_size=64,
                             opts=viz.RenderOptions(backend=backend, **SMALL), out=out)
    png = load_png(out)
    assert_nontrivial(png, min_colors=40)
    # Two panels side by side (plain cloud | patches) plus the title band.
    assert png.shape[1] == 2 * 240 and png.shape[0] > 200
    patches = img[-200:, 240:]
    # Black FPS centres are drawn on top of the patch colours.
    assert color_mask(patches, (0, 0, 0), tol=30).sum() > 16
    palette = viz.distinct_colors(16)
    seen = sum(color_mask(patches, c, tol=12).sum() > 5 for c in palette)
    assert seen >= 10, f"only {seen} of 16 patch colours visible"


def test_patch_assignment_takes_nearest_centre_and_leaves_outsiders_grey():
    pts = np.array([[0, 0, 0], [0.4, 0, 0], [0.6, 0, 0], [1, 0, 0], [5, 5, 5]], float)
    centers = pts[[0, 3]]
    idx = np.array([[0, 1, 2], [3, 2, 1]])  # points 1 and 2 are in both groups
    assign = patch_assignment(pts, centers, idx)
    assert assign.tolist() == [0, 0, 1, 1, -1]


def test_label_colours_are_shared_between_gt_and_prediction():
    gt = np.array([50, 50, 51, 53])
    pred = np.array([50, 52, 51, 51])
    mapping, (cg, cp) = label_colors(gt, pred)
    assert list(mapping) == [50, 51, 52, 53]
    assert np.allclose(cg[2], cp[2]) and np.allclose(cg[0], mapping[50])
    assert len({tuple(c) for c in mapping.values()}) == 4
    assert not any(np.allclose(c, ERROR_RED) or np.allclose(c, GREY) for c in mapping.values())


def test_segmentation_picture_shows_gt_prediction_and_errors(tmp_path, backend):
    pts = sphere(3000)
    gt = (pts[:, 1] > 0).astype(int) + 50  # two parts: lower / upper half
    pred = gt.copy()
    pred[pts[:, 0] > 0.5] = 52  # a wrong cap on the +x side
    out = tmp_path / "seg.png"
    img = viz.render_segmentation(pts, gt, pred, opts=viz.RenderOptions(backend=backend, **SMALL), title="t",
                                  out=out)
    png = load_png(out)
    assert_nontrivial(png, min_colors=20)
    assert png.shape[1] == 3 * 240
    err_panel = img[:, 480:]
    assert color_mask(err_panel, ERROR_RED, tol=30).sum() > 50
    # Wrong points are all on the +x side, i.e. the right half of the errors panel seen from the default view.
    assert color_mask(err_panel, GREY, tol=10).sum() > 50
    mapping, _ = label_colors(gt, pred)
    gt_panel, pred_panel = img[:, :240], img[:, 240:480]
    assert color_mask(gt_panel, mapping[52], tol=12).sum() < 5  # part 52 never appears in the ground truth
    assert color_mask(pred_panel, mapping[52], tol=12).sum() > 50


def test_segmentation_without_prediction_is_one_panel(backend):
    pts = sphere(1000)
    img = viz.render_segmentation(pts, (pts[:, 2] > 0).astype(int), opts=viz.RenderOptions(backend=backend, **SMALL))
    assert img.shape[1] == 240
    assert_nontrivial(img)


def test_classification_picture_names_prediction_and_draws_bars(tmp_path, backend):
    out = tmp_path / "cls.png"
    probs = {"chair": 0.7, "sofa": 0.2, "table": 0.06, "bed": 0.04}
    img = viz.render_classification(sphere(), probs, label="chair", k=3,
                                    opts=viz.RenderOptions(backend=backend, **SMALL), out=out)
    png = load_png(out)
    assert_nontrivial(png, min_colors=20)
    assert png.shape[1] > 240  # cloud plus the bar chart
    assert color_mask(img, (0x2C / 255, 0xA0 / 255, 0x2C / 255), tol=8).sum() > 100  # the true class's bar
    assert color_mask(img, (0x1F / 255, 0x77 / 255, 0xB4 / 255), tol=8).sum() > 10  # the others


def test_topk_pairs_accepts_every_form():
    assert viz.topk_pairs([0.1, 0.7, 0.2], ["a", "b", "c"], k=2) == [("b", 0.7), ("c", 0.2)]
    assert viz.topk_pairs({"a": 0.3, "b": 0.6}, k=5)[0] == ("b", 0.6)
    assert viz.topk_pairs([["a", 0.3], ["b", 0.6]], k=1) == [("b", 0.6)]
    with pytest.raises(ValueError, match="3 probabilities but 2 class names"):
        viz.topk_pairs([0.1, 0.2, 0.7], ["a", "b"])


@pytest.mark.parametrize(
    "points, match",
    [(np.zeros((0, 3)), "empty"), (np.full((5, 3), np.nan), "NaN"), (np.zeros((5, 2)), r"shape \(N, 3\)")],
)
def test_bad_clouds_are_refused_with_the_reason(points, match):
    with pytest.raises(ValueError, match=match):
        viz.render_cloud(points, opts=viz.RenderOptions(backend="matplotlib", **SMALL))


def test_bad_labels_and_options_are_refused():
    pts = sphere(100)
    with pytest.raises(ValueError, match="labels: 99 values for 100 points"):
        viz.render_segmentation(pts, np.zeros(99, int), opts=viz.RenderOptions(backend="matplotlib", **SMALL))
    with pytest.raises(ValueError, match="integer part ids"):
        viz.render_segmentation(pts, np.full(100, 0.5), opts=viz.RenderOptions(backend="matplotlib", **SMALL))
    with pytest.raises(ValueError, match="up axis"):
        viz.RenderOptions(up="w")
    with pytest.raises(ValueError, match="unknown colormap 'virdis'.*viridis"):
        viz.render_cloud(pts, opts=viz.RenderOptions(colormap="virdis", backend="matplotlib"))
    with pytest.raises(ValueError, match="cannot take 200 groups"):
        viz.render_patches(pts, 200, 8, opts=viz.RenderOptions(backend="matplotlib", **SMALL))


def test_backends_frame_the_same_picture(open3d_works):
    """The fallback is a stand-in, not a different picture: the same pixels are covered to within a few %."""
    if not open3d_works:
        pytest.skip("Open3D offscreen rendering unavailable here")
    pts = sphere(3000) * [1.0, 0.5, 0.3]
    a = viz.render_cloud(pts, opts=viz.RenderOptions(backend="open3d", **SMALL))
    b = viz.render_cloud(pts, opts=viz.RenderOptions(backend="matplotlib", **SMALL))
    ia, ib = a.min(2) < 235, b.min(2) < 235
    iou = (ia & ib).sum() / (ia | ib).sum()
    assert iou > 0.6, iou
    assert abs(ink_fraction(a) - ink_fraction(b)) < 0.1
    assert distinct_colors(a) > 10 and distinct_colors(b) > 10
