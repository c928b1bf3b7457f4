"""Shared checks for the rendered pictures."""

from pathlib import Path

import numpy as np


def load_png(path) -> np.ndarray:
    from PIL import Image

    path = Path(path)
    assert path.is_file(), f"{path} was not written"
    with Image.open(path) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB"))


def distinct_colors(img: np.ndarray) -> int:
    return len(np.unique(img.reshape(-1, 3), axis=0))


def ink_fraction(img: np.ndarray) -> float:
    """Share of pixels that are not (near) white background."""
    return float((img.min(axis=2) < 235).mean())


def assert_nontrivial(img: np.ndarray, min_size=(100, 100), min_colors=8, min_ink=0.005, max_ink=0.9) -> None:
    h, w = img.shape[:2]
    assert h >= min_size[0] and w >= min_size[1], f"picture too small: {w}x{h}"
    n = distinct_colors(img)
    assert n >= min_colors, f"only {n} distinct colours: blank or flat picture"
    ink = ink_fraction(img)
    assert min_ink <= ink <= max_ink, f"{ink:.1%} of pixels are not background"


def color_mask(img: np.ndarray, rgb, tol: int = 40) -> np.ndarray:
    """Pixels within ``tol`` (per channel) of ``rgb`` given in [0, 1] or 0..255."""
    rgb = np.asarray(rgb, dtype=np.float64)
    if rgb.max() <= 1.0:
        rgb = rgb * 255
    return (np.abs(img.astype(np.int32) - rgb.astype(np.int32)) <= tol).all(axis=2)


def sphere(n=2000, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(n, 3))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)
