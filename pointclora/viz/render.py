"""Point layers -> RGB image, headless: Open3D's offscreen renderer, or a matplotlib painter's-algorithm fallback.

Both backends share one camera model (perspective, look-at from azimuth/elevation around the ``up`` axis, framed
on the cloud's bounding sphere), so a picture looks the same whichever backend drew it.
"""

from __future__ import annotations

import contextlib
import math
import os
import subprocess
import sys
import warnings
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import numpy as np

from .colors import axis_index

__all__ = [
    "RenderOptions",
    "Layer",
    "Camera",
    "compute_camera",
    "render_layers",
    "resolve_backend",
    "has_display",
    "require_display",
    "show_layers",
    "BACKENDS",
]

BACKENDS = ("auto", "open3d", "matplotlib")
_ENV_BACKEND = "POINTCLORA_VIZ_BACKEND"


@dataclass
class RenderOptions:
    """How to draw one view. ``azimuth``/``elevation`` in degrees around ``up``; ``zoom`` > 1 moves closer."""

    width: int = 640
    height: int = 480
    point_size: float = 4.0
    colormap: str = "viridis"
    up: str = "y"
    azimuth: float = 45.0
    elevation: float = 25.0
    zoom: float = 1.0
    fov: float = 30.0
    background: Tuple[float, float, float] = (1.0, 1.0, 1.0)
    backend: str = "auto"

    def __post_init__(self) -> None:
        axis_index(self.up)
        if self.width < 16 or self.height < 16:
            raise ValueError(f"image size must be at least 16x16 pixels, got {self.width}x{self.height}")
        if self.point_size <= 0:
            raise ValueError(f"point_size must be > 0, got {self.point_size}")
        if self.zoom <= 0:
            raise ValueError(f"zoom must be > 0, got {self.zoom}")
        if not 1.0 <= self.fov <= 150.0:
            raise ValueError(f"fov must be in [1, 150] degrees, got {self.fov}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {self.backend!r}")


@dataclass
class Layer:
    """Points drawn with one point size: ``points (N, 3)``, ``colors (N, 3)`` RGB in [0, 1]."""

    points: np.ndarray
    colors: np.ndarray
    point_size: float = 4.0
    name: str = field(default="layer")

    def __post_init__(self) -> None:
        self.points = np.ascontiguousarray(self.points, dtype=np.float64).reshape(-1, 3)
        self.colors = np.ascontiguousarray(self.colors, dtype=np.float64).reshape(-1, 3)
        if len(self.points) != len(self.colors):
            raise ValueError(f"layer {self.name!r}: {len(self.points)} points but {len(self.colors)} colours")
        if not np.isfinite(self.points).all():
            raise ValueError(f"layer {self.name!r}: points contain NaN or inf")


@dataclass
class Camera:
    center: np.ndarray
    eye: np.ndarray
    up: np.ndarray
    fov: float


def _frame(up: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(right, up, front) unit vectors with right x up = front, so every ``up`` choice is a right-handed view."""
    u = np.eye(3)[axis_index(up)]
    r = np.eye(3)[{"x": 1, "y": 0, "z": 0}[up]]
    return r, u, np.cross(r, u)


def compute_camera(points: np.ndarray, opts: RenderOptions) -> Camera:
    """Look at the cloud from ``opts.azimuth``/``elevation``, as close as keeps every point in the picture."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    if len(pts) == 0:
        raise ValueError("nothing to render: the point cloud is empty")
    center = (pts.min(0) + pts.max(0)) / 2
    radius = float(np.linalg.norm(pts - center, axis=1).max()) or 1.0
    right, up, front = _frame(opts.up)
    az, el = math.radians(opts.azimuth), math.radians(opts.elevation)
    direction = math.cos(el) * (math.cos(az) * front + math.sin(az) * right) + math.sin(el) * up
    # Looking straight down the up axis makes "up" degenerate; use the front axis as screen-up then.
    cam_up = up if abs(math.sin(el)) < 0.999 else -front * np.sign(math.sin(el))
    s = np.cross(-direction, cam_up)
    s /= np.linalg.norm(s)
    u = np.cross(s, -direction)
    tan_v = math.tan(math.radians(opts.fov) / 2)
    tan_h = tan_v * opts.width / opts.height
    # Fit the cloud itself, not its bounding sphere (a flat airplane would fill a third of the picture): a point
    # at screen offsets (x, y) and depth dz towards the camera stays inside a perspective frustum of half-angles
    # h, v iff distance >= |x| / tan(h) + dz and >= |y| / tan(v) + dz. The bounding-box centre does not project
    # to the middle of the cloud's silhouette, so shift the target sideways until it does (converges in a few
    # steps; each step only moves the target within the view plane).
    for _ in range(4):
        rel = pts - center
        x, y, dz = rel @ s, rel @ u, rel @ direction
        distance = float(np.max(np.maximum(np.abs(x) / tan_h, np.abs(y) / tan_v) + dz))
        distance = max(distance, radius * 1e-3 + float(dz.max()), 1e-6)
        depth = distance - dz  # > 0 for every point by construction
        sx, sy = x / depth / tan_h, y / depth / tan_v  # normalised screen coordinates in [-1, 1]
        off_x, off_y = (sx.max() + sx.min()) / 2, (sy.max() + sy.min()) / 2
        if abs(off_x) < 1e-3 and abs(off_y) < 1e-3:
            break
        center = center + s * off_x * distance * tan_h + u * off_y * distance * tan_v
    # 8% margin, then zoom: the distance to the nearest point shrinks, so zoom > 1 enlarges.
    near = float(dz.max())
    distance = near + (distance * 1.08 - near) / opts.zoom
    return Camera(center=center, eye=center + distance * direction, up=cam_up, fov=opts.fov)


# --------------------------------------------------------------------------------------------------- backends
_probe_result: Optional[Tuple[bool, str]] = None
_fallback_warned = False

_PROBE = r"""
import numpy as np, open3d as o3d
from open3d.visualization import rendering
r = rendering.OffscreenRenderer(32, 32)
r.scene.view.set_post_processing(False)
r.scene.set_background([1, 1, 1, 1])
g = np.linspace(-0.3, 0.3, 7)
pts = np.stack(np.meshgrid(g, g, g), -1).reshape(-1, 3)
pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts))
pc.colors = o3d.utility.Vector3dVector(np.tile([[1.0, 0.0, 0.0]], (len(pts), 1)))
m = rendering.MaterialRecord(); m.shader = "defaultUnlit"; m.point_size = 8
r.scene.add_geometry("p", pc, m)
r.setup_camera(30, [0, 0, 0], [0, 0, 3], [0, 1, 0])
img = np.asarray(r.render_to_image())
assert img[16, 16, 0] > 200 and img[16, 16, 1] < 60, img[16, 16]
print("PROBE_OK")
"""


def _probe_open3d() -> Tuple[bool, str]:
    """Try Open3D's offscreen renderer in a child process, once per process.

    When no GPU/Vulkan/EGL device works, Filament aborts the whole process (SIGABRT, not a Python exception), so
    the only safe test is a throwaway child.
    """
    global _probe_result
    if _probe_result is None:
        try:
            import open3d  # noqa: F401
        except ImportError as e:
            _probe_result = (False, f"open3d is not installed ({e}); pip install 'pointclora[viz]'")
            return _probe_result
        try:
            proc = subprocess.run(
                [sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120, env=os.environ.copy()
            )
            ok = proc.returncode == 0 and "PROBE_OK" in proc.stdout
            tail = (proc.stderr.strip().splitlines() or proc.stdout.strip().splitlines() or [""])[-1]
            _probe_result = (ok, "ok" if ok else f"offscreen renderer failed (exit {proc.returncode}): {tail}")
        except subprocess.TimeoutExpired:
            _probe_result = (False, "offscreen renderer probe timed out after 120 s")
    return _probe_result


def resolve_backend(backend: str = "auto") -> str:
    """``"open3d"`` or ``"matplotlib"``. ``auto`` (default) honours ``$POINTCLORA_VIZ_BACKEND``, else probes Open3D
    and falls back to matplotlib with a warning that says why."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    if backend == "auto":
        env = os.environ.get(_ENV_BACKEND, "").strip().lower()
        if env:
            if env not in ("open3d", "matplotlib"):
                raise ValueError(f"${_ENV_BACKEND} must be 'open3d' or 'matplotlib', got {env!r}")
            return env
        ok, why = _probe_open3d()
        if ok:
            return "open3d"
        global _fallback_warned
        if not _fallback_warned:
            _fallback_warned = True
            warnings.warn(
                f"Open3D offscreen rendering unavailable ({why}); drawing with matplotlib instead", stacklevel=2
            )
        return "matplotlib"
    return backend


@contextlib.contextmanager
def _native_stdout_silenced():
    """Filament prints its start-up banner on fd 1 from C++; keep it out of our CLI's stdout."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        yield
        return
    sys.stdout.flush()
    saved = os.dup(fd)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)


def _render_open3d(layers: Sequence[Layer], cam: Camera, opts: RenderOptions) -> np.ndarray:
    import open3d as o3d
    from open3d.visualization import rendering

    with _native_stdout_silenced():
        # A fresh renderer per picture: re-using one after clear_geometry() makes Filament abort on teardown
        # ("destroying MaterialInstance ... still in use") in open3d 0.20.
        renderer = rendering.OffscreenRenderer(int(opts.width), int(opts.height))
        try:
            # Post-processing (tone mapping, colour grading) washes colours out; off, colours land exactly.
            renderer.scene.view.set_post_processing(False)
            renderer.scene.set_background([*opts.background, 1.0])
            for i, layer in enumerate(layers):
                if len(layer.points) == 0:
                    continue
                pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(layer.points))
                pc.colors = o3d.utility.Vector3dVector(np.clip(layer.colors, 0, 1))
                mat = rendering.MaterialRecord()
                mat.shader = "defaultUnlit"
                mat.point_size = float(layer.point_size)
                renderer.scene.add_geometry(f"{layer.name}_{i}", pc, mat)
            renderer.setup_camera(cam.fov, cam.center, cam.eye, cam.up)
            img = np.asarray(renderer.render_to_image()).copy()
        finally:
            del renderer
    return img[..., :3].astype(np.uint8)


def _project(points: np.ndarray, cam: Camera, width: int, height: int) -> Tuple[np.ndarray, np.ndarray]:
    """Pinhole projection to pixel coordinates (x right, y down) and the depth along the view direction."""
    f = cam.center - cam.eye
    f = f / np.linalg.norm(f)
    s = np.cross(f, cam.up)
    s = s / np.linalg.norm(s)
    u = np.cross(s, f)
    rel = points - cam.eye
    x, y, z = rel @ s, rel @ u, rel @ f
    z_safe = np.maximum(z, 1e-9)
    focal = (height / 2) / math.tan(math.radians(cam.fov) / 2)
    px = width / 2 + focal * x / z_safe
    py = height / 2 - focal * y / z_safe
    return np.stack([px, py], 1), z


def _render_matplotlib(layers: Sequence[Layer], cam: Camera, opts: RenderOptions) -> np.ndarray:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    dpi = 100
    fig = Figure(figsize=(opts.width / dpi, opts.height / dpi), dpi=dpi, facecolor=opts.background)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, opts.width)
    ax.set_ylim(opts.height, 0)
    ax.set_facecolor(opts.background)
    ax.axis("off")
    xy, depth, col, size = [], [], [], []
    for layer in layers:
        p, z = _project(layer.points, cam, opts.width, opts.height)
        xy.append(p)
        depth.append(z)
        col.append(np.clip(layer.colors, 0, 1))
        size.append(np.full(len(p), layer.point_size))
    if xy:
        xy, depth, col, size = map(np.concatenate, (xy, depth, col, size))
        front = depth > 0
        # Painter's algorithm: far points first so near ones cover them, as a depth buffer would.
        order = np.argsort(-depth[front], kind="stable")
        xy, col, size = xy[front][order], col[front][order], size[front][order]
        # scatter sizes are in points^2; one pixel is 72/dpi points.
        ax.scatter(xy[:, 0], xy[:, 1], s=(size * 72 / dpi) ** 2, c=col, marker="o", linewidths=0)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def render_layers(layers: Sequence[Layer], opts: Optional[RenderOptions] = None, frame_points=None) -> np.ndarray:
    """Draw point layers into an ``(H, W, 3)`` uint8 image. The camera frames ``frame_points`` (default: all)."""
    opts = opts or RenderOptions()
    layers = list(layers)
    pts = frame_points if frame_points is not None else np.concatenate([layer.points for layer in layers])
    cam = compute_camera(pts, opts)
    backend = resolve_backend(opts.backend)
    if backend == "open3d":
        return _render_open3d(layers, cam, opts)
    return _render_matplotlib(layers, cam, opts)


def has_display() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def require_display() -> None:
    """Raise a RuntimeError that says what to do when no display exists for an interactive window."""
    if not has_display():
        raise RuntimeError(
            "--show needs a display, but neither $DISPLAY nor $WAYLAND_DISPLAY is set (headless machine?). "
            "Write a picture with --out FILE.png instead, or run under X forwarding / a desktop session."
        )


def show_layers(layers: List[Layer], title: str = "PointCLoRA", opts: Optional[RenderOptions] = None) -> None:
    """Open an interactive Open3D window (needs a display); blocks until the window is closed."""
    require_display()
    try:
        import open3d as o3d
    except ImportError as e:
        raise RuntimeError(f"--show needs open3d ({e}); pip install 'pointclora[viz]'") from e
    geoms = []
    for layer in layers:
        pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(layer.points))
        pc.colors = o3d.utility.Vector3dVector(np.clip(layer.colors, 0, 1))
        geoms.append(pc)
    opts = opts or RenderOptions()
    o3d.visualization.draw_geometries(geoms, window_name=title, width=opts.width, height=opts.height)
