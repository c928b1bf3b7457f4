"""Readers for point-cloud files and legacy pickles, with errors that name the file and the problem.

Every reader returns a float32 numpy array ``(N, C)`` with ``C >= 3`` (xyz first, then whatever extra columns the
file holds: normals, colour, ...). Nothing here raises a bare numpy/h5py/pickle traceback for bad input: problems
come out as :class:`DataFormatError` (malformed content), :class:`DatasetNotFoundError` (missing files) or
:class:`UnsafePickleError` (a pickle that asks for anything but plain data).
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = [
    "PointFormat",
    "register_point_format",
    "unregister_point_format",
    "point_cloud_extensions",
    "point_format",
    "DataFormatError",
    "DatasetNotFoundError",
    "UnsafePickleError",
    "POINT_CLOUD_EXTENSIONS",
    "read_point_cloud",
    "read_pcd",
    "read_off",
    "read_obj",
    "read_ply",
    "read_text_points",
    "sample_mesh",
    "safe_pickle_load",
    "safe_pickle_loads",
    "read_h5_arrays",
    "check_finite",
    "read_lines",
    "text_line_of_row",
]

PathLike = Union[str, os.PathLike]

#: The built-in suffixes :func:`read_point_cloud` understands (``.gz`` may follow the text and PCD ones); with the
#: registered ones: :func:`point_cloud_extensions`.
POINT_CLOUD_EXTENSIONS: Tuple[str, ...] = (
    ".pcd",
    ".pcd.gz",
    ".ply",
    ".off",
    ".obj",
    ".npy",
    ".txt",
    ".txt.gz",
    ".xyz",
    ".xyz.gz",
    ".pts",
)


class DataFormatError(ValueError):
    """A data file exists but its content is not what the format promises (names the file and the problem)."""


class PointFormat(NamedTuple):
    """A point-file format: ``read(path, num_points, seed) -> (N, 3+)`` array (a mesh reader samples ``num_points``
    with ``seed``; a point reader ignores both) and the up axis its files usually have (None: no convention)."""

    read: Callable[[Path, int, int], np.ndarray]
    up_axis: Optional[str] = None


#: Lower-case extension (``.gz`` included when it follows) -> its format; :func:`register_point_format` adds one.
_POINT_FORMATS: Dict[str, PointFormat] = {}


def register_point_format(*extensions: str, read: Callable[[Path, int, int], np.ndarray],
                          up_axis: Optional[str] = None) -> None:  # fmt: skip
    """Make :func:`read_point_cloud` — and so every folder dataset, ``tools/predict.py`` and ``tools/visualize.py``
    — read files ending in ``extensions`` with ``read(path, num_points, seed)``. The one place a format is added."""
    if up_axis not in (None, "x", "y", "z"):
        raise ValueError(f"up_axis must be None, 'x', 'y' or 'z', got {up_axis!r}")
    for ext in extensions:
        ext = str(ext).lower()
        if not ext.startswith("."):
            raise ValueError(f"a point-file extension starts with '.', got {ext!r}")
        _POINT_FORMATS[ext] = PointFormat(read, up_axis)


def unregister_point_format(*extensions: str) -> None:
    """Remove formats (tests registering a toy format clean up with this)."""
    for ext in extensions:
        _POINT_FORMATS.pop(str(ext).lower(), None)


def point_cloud_extensions() -> Tuple[str, ...]:
    """Every extension :func:`read_point_cloud` reads now (built-in and registered), in registration order."""
    return tuple(_POINT_FORMATS)


def point_format(path: PathLike) -> Optional[PointFormat]:
    """The registered format of ``path`` by its (longest matching) extension, or None."""
    return _POINT_FORMATS.get(_suffix(path))


class DatasetNotFoundError(FileNotFoundError):
    """A dataset root, file or split list is missing; the message says where to get it and the layout expected."""


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for a global outside the plain-data allow-list (it could have run code)."""


# ---------------------------------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------------------------------


def _suffix(path: PathLike) -> str:
    """Lower-case suffix including a trailing ``.gz`` (``a.pcd.gz`` -> ``.pcd.gz``)."""
    name = os.fspath(path).lower()
    for ext in sorted(set(POINT_CLOUD_EXTENSIONS) | set(_POINT_FORMATS), key=len, reverse=True):
        if name.endswith(ext):
            return ext
    return Path(name).suffix


def _require_file(path: PathLike, what: str = "file") -> Path:
    p = Path(path)
    if not p.is_file():
        raise DatasetNotFoundError(f"{what} not found: {p}")
    return p


def _read_bytes(path: Path) -> bytes:
    try:
        if path.name.lower().endswith(".gz"):
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError) as e:  # truncated gzip stream, unreadable file
        raise DataFormatError(f"{path}: cannot read file ({e})") from None


def read_lines(path: PathLike, what: str = "list file") -> List[str]:
    """Non-empty stripped lines of a small text file (split lists, class names)."""
    p = _require_file(path, what)
    return [ln.strip() for ln in p.read_text().splitlines() if ln.strip()]


def check_finite(points: np.ndarray, path: Any, what: str = "coordinates") -> np.ndarray:
    """Raise :class:`DataFormatError` naming ``path`` if ``points`` holds NaN/Inf (they poison FPS and norms)."""
    if points.size and not np.isfinite(points).all():
        bad = np.unique(np.nonzero(~np.isfinite(points))[0])
        line = text_line_of_row(path, int(bad[0])) if isinstance(path, (str, os.PathLike)) else None
        where = f"row {int(bad[0])}" + (f", line {line}" if line is not None else "")
        raise DataFormatError(
            f"{path}: {len(bad)} row(s) with NaN/Inf {what} (first at {where}); clean the file or drop those points"
        )
    return points


def _finish(points: np.ndarray, path: Any) -> np.ndarray:
    points = np.ascontiguousarray(points, dtype=np.float32)
    if points.ndim != 2 or points.shape[1] < 3:
        raise DataFormatError(f"{path}: expected rows of at least 3 values (x y z), got array of shape {points.shape}")
    if points.shape[0] == 0:
        raise DataFormatError(f"{path}: empty point cloud (0 points)")
    return check_finite(points, path)


# ---------------------------------------------------------------------------------------------------------------
# text clouds (.txt / .xyz / .pts, comma or whitespace separated)
# ---------------------------------------------------------------------------------------------------------------


def read_text_points(path: PathLike, delimiter: Optional[str] = None, usecols: Optional[Sequence[int]] = None):
    """Read a table of numbers: ``x,y,z[,...]`` or ``x y z [...]`` rows, optionally gzip-compressed.

    The delimiter is detected from the first data row when not given. Returns float32 ``(N, C)``; the full table
    (checks for NaN/Inf, emptiness and width are left to the caller via :func:`_finish` in
    :func:`read_point_cloud`, since label columns are legitimately part of the table).
    """
    p = _require_file(path)
    raw = _read_bytes(p)
    first = next((ln for ln in raw.splitlines() if ln.strip() and not ln.lstrip().startswith(b"#")), None)
    if first is None:
        raise DataFormatError(f"{p}: empty point cloud (no data rows)")
    if delimiter is None:
        delimiter = "," if b"," in first else None
    try:
        # numpy >= 1.23's C parser: ~5x faster than a Python split for the 10k-row ModelNet files.
        arr = np.loadtxt(io.BytesIO(raw), delimiter=delimiter, dtype=np.float32, ndmin=2, usecols=usecols, comments="#")
    except ValueError as e:
        why = _first_bad_line(raw, delimiter, usecols) or f"malformed text row ({e})"
        raise DataFormatError(f"{p}: {why}") from None
    if arr.size == 0:
        raise DataFormatError(f"{p}: empty point cloud (no data rows)")
    return arr


def _data_lines(raw: bytes):
    """``(1-based line number, stripped text)`` of the data lines (not blank, not ``#`` comments) of a text table."""
    for number, line in enumerate(raw.splitlines(), start=1):
        text = line.split(b"#", 1)[0].strip()
        if text:
            yield number, text.decode("utf-8", "replace")


def _first_bad_line(raw: bytes, delimiter: Optional[str], usecols: Optional[Sequence[int]] = None) -> Optional[str]:
    """Why numpy refused the table, as ``line L: ...`` (numpy's own message counts rows inconsistently)."""
    width = None
    for number, text in _data_lines(raw):
        fields = [f.strip() for f in text.split(delimiter)]
        if width is None:
            width = len(fields)
        if len(fields) != width:
            return f"line {number}: {len(fields)} values, the first data row has {width} ({text[:60]!r})"
        for col, f in enumerate(fields):
            if usecols is not None and col not in usecols:
                continue
            try:
                float(f)
            except ValueError:
                return f"line {number}, column {col + 1}: {f[:30]!r} is not a number ({text[:60]!r})"
    return None


def text_line_of_row(path: PathLike, row: int) -> Optional[int]:
    """1-based line number of data row ``row`` (0-based) of a text table, or None when ``path`` is not one."""
    name = os.fspath(path).lower()
    if not name.endswith((".txt", ".txt.gz", ".xyz", ".xyz.gz", ".pts")):
        return None
    try:
        raw = _read_bytes(Path(path))
    except DataFormatError:
        return None
    for i, (number, _) in enumerate(_data_lines(raw)):
        if i == row:
            return number
    return None


# ---------------------------------------------------------------------------------------------------------------
# PCD (ascii and binary; binary_compressed is delegated to Open3D)
# ---------------------------------------------------------------------------------------------------------------

_PCD_TYPES = {
    ("F", 4): "<f4",
    ("F", 8): "<f8",
    ("I", 1): "<i1",
    ("I", 2): "<i2",
    ("I", 4): "<i4",
    ("I", 8): "<i8",
    ("U", 1): "<u1",
    ("U", 2): "<u2",
    ("U", 4): "<u4",
    ("U", 8): "<u8",
}


def read_pcd(path: PathLike) -> np.ndarray:
    """Read a PCD v0.5-0.7 file (``DATA ascii`` or ``binary``, optionally ``.gz``) -> float32 ``(N, C)``.

    Columns: ``x y z``, then ``normal_x normal_y normal_z`` when present, then the other fields in ``FIELDS`` order;
    packed ``rgb``/``rgba`` floats and ``_`` padding fields are
    dropped (they are bit patterns, not numbers). Binary-compressed files go through Open3D.
    """
    p = _require_file(path)
    raw = _read_bytes(p)
    header: Dict[str, List[str]] = {}
    pos = 0
    while True:
        end = raw.find(b"\n", pos)
        if end < 0:
            raise DataFormatError(f"{p}: PCD header has no DATA line")
        line = raw[pos:end].decode("ascii", "replace").strip()
        pos = end + 1
        if not line or line.startswith("#"):
            continue
        key, *vals = line.split()
        header[key.upper()] = vals
        if key.upper() == "DATA":
            break
    try:
        fields = header["FIELDS"]
        n = int(header["POINTS"][0]) if "POINTS" in header else int(header["WIDTH"][0]) * int(header["HEIGHT"][0])
        sizes = [int(s) for s in header.get("SIZE", ["4"] * len(fields))]
        types = header.get("TYPE", ["F"] * len(fields))
        counts = [int(c) for c in header.get("COUNT", ["1"] * len(fields))]
        mode = header["DATA"][0].lower()
    except (KeyError, IndexError, ValueError) as e:
        raise DataFormatError(f"{p}: malformed PCD header (missing or bad {e})") from None
    if not (len(fields) == len(sizes) == len(types) == len(counts)):
        raise DataFormatError(f"{p}: PCD header FIELDS/SIZE/TYPE/COUNT lengths differ")
    if n == 0:
        raise DataFormatError(f"{p}: empty point cloud (0 points)")
    if not {"x", "y", "z"} <= set(fields):
        raise DataFormatError(f"{p}: PCD has no x y z fields (FIELDS {' '.join(fields)})")
    # Column index of each field's first element in the flat row.
    starts = np.cumsum([0] + counts[:-1])
    width = int(sum(counts))
    if mode == "ascii":
        try:
            table = np.loadtxt(io.BytesIO(raw[pos:]), dtype=np.float64, ndmin=2)
        except ValueError as e:
            raise DataFormatError(f"{p}: malformed PCD ascii row ({e})") from None
        if table.size == 0:
            table = np.zeros((0, width))
        if table.shape[1] != width:
            raise DataFormatError(f"{p}: PCD rows have {table.shape[1]} values, header declares {width}")
    elif mode == "binary":
        try:
            dtype = np.dtype(
                [(f"f{i}", _PCD_TYPES[(t.upper(), s)], (c,)) for i, (t, s, c) in enumerate(zip(types, sizes, counts))]
            )
        except KeyError as e:
            raise DataFormatError(f"{p}: unsupported PCD TYPE/SIZE {e}") from None
        need = n * dtype.itemsize
        if len(raw) - pos < need:
            raise DataFormatError(
                f"{p}: truncated binary PCD: {len(raw) - pos} bytes of data, {need} expected for {n} points"
            )
        rec = np.frombuffer(raw, dtype=dtype, count=n, offset=pos)
        table = np.concatenate([rec[f"f{i}"].astype(np.float64).reshape(n, -1) for i in range(len(fields))], axis=1)
    elif mode == "binary_compressed":
        return _finish(_read_open3d_cloud(p), p)
    else:
        raise DataFormatError(f"{p}: unknown PCD DATA mode {mode!r} (expected ascii, binary or binary_compressed)")
    if table.shape[0] != n:
        raise DataFormatError(f"{p}: PCD header declares {n} points, file holds {table.shape[0]}")
    xyz_cols = [int(starts[fields.index(a)]) for a in ("x", "y", "z")]
    # Normals come right after xyz (the (N, 6) convention of the datasets), then any other numeric fields.
    normal_cols = [int(starts[fields.index(a)]) for a in ("normal_x", "normal_y", "normal_z") if a in fields]
    normal_cols = normal_cols if len(normal_cols) == 3 else []
    skip = {"x", "y", "z", "rgb", "rgba", "_"} | ({"normal_x", "normal_y", "normal_z"} if normal_cols else set())
    extra = [int(starts[i]) + k for i, f in enumerate(fields) if f not in skip for k in range(counts[i])]
    return _finish(table[:, xyz_cols + normal_cols + extra], p)


def _read_open3d_cloud(path: Path) -> np.ndarray:
    try:
        import open3d as o3d
    except ImportError:  # pragma: no cover - open3d is an optional extra
        raise DataFormatError(f"{path}: reading this file needs Open3D (pip install open3d-cpu)") from None
    if path.name.lower().endswith(".gz"):
        raise DataFormatError(f"{path}: Open3D cannot read gzip-compressed files; gunzip it first")
    pcd = o3d.io.read_point_cloud(str(path))
    pts = np.asarray(pcd.points, dtype=np.float32)
    if len(pts) == 0:
        raise DataFormatError(f"{path}: Open3D read 0 points (unsupported or corrupt file)")
    if pcd.has_normals():
        pts = np.concatenate([pts, np.asarray(pcd.normals, dtype=np.float32)], axis=1)
    return pts


# ---------------------------------------------------------------------------------------------------------------
# meshes (.off, .obj) and area-weighted surface sampling
# ---------------------------------------------------------------------------------------------------------------


def read_off(path: PathLike) -> Tuple[np.ndarray, np.ndarray]:
    """Read an OFF mesh -> ``(vertices (V, 3) float64, triangles (F, 3) int64)``; polygons are fan-triangulated.

    Accepts the broken ModelNet header where the counts share the first line (``OFF3514 3546 0``).
    """
    p = _require_file(path)
    text = _read_bytes(p).decode("ascii", "replace")
    lines = [ln.split("#", 1)[0].strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln]
    if not lines or not lines[0].upper().startswith("OFF"):
        raise DataFormatError(f"{p}: not an OFF file (first line {lines[0][:40] if lines else ''!r})")
    rest = lines[0][3:].strip()  # 'OFF3514 3546 0' -> '3514 3546 0'
    body = lines[1:]
    if not rest:
        if not body:
            raise DataFormatError(f"{p}: OFF header has no vertex/face counts")
        rest, body = body[0], body[1:]
    try:
        nv, nf = (int(v) for v in rest.split()[:2])
    except ValueError:
        raise DataFormatError(f"{p}: bad OFF counts line {rest!r} (expected 'V F E')") from None
    if len(body) < nv + nf:
        raise DataFormatError(
            f"{p}: truncated OFF: header declares {nv} vertices + {nf} faces, file has {len(body)} data lines"
        )
    try:
        verts = np.array([ln.split()[:3] for ln in body[:nv]], dtype=np.float64)
        faces = [[int(v) for v in ln.split()] for ln in body[nv : nv + nf]]
    except ValueError as e:
        raise DataFormatError(f"{p}: malformed OFF data line ({e})") from None
    if verts.shape != (nv, 3):
        raise DataFormatError(f"{p}: OFF vertex lines must hold 3 coordinates")
    tris = [(f[1], f[1 + k], f[2 + k]) for f in faces if len(f) >= 4 for k in range(1, f[0] - 1)]
    tri = np.asarray(tris, dtype=np.int64).reshape(-1, 3)
    if tri.size and (tri.min() < 0 or tri.max() >= nv):
        raise DataFormatError(f"{p}: OFF face refers to vertex {int(tri.max())}, mesh has {nv} vertices")
    return verts, tri


def read_obj(path: PathLike) -> Tuple[np.ndarray, np.ndarray]:
    """Read the ``v`` and ``f`` records of a Wavefront OBJ -> ``(vertices (V, 3), triangles (F, 3))``."""
    p = _require_file(path)
    verts, tris = [], []
    try:
        for ln in _read_bytes(p).decode("ascii", "replace").splitlines():
            parts = ln.split()
            if not parts:
                continue
            if parts[0] == "v":
                if len(parts) < 4:  # reshaped to (-1, 3) below, 2-D vertices would silently become other vertices
                    raise ValueError(f"vertex line {ln.strip()[:60]!r} holds {len(parts) - 1} coordinates, not 3")
                verts.append([float(v) for v in parts[1:4]])
            elif parts[0] == "f":
                idx = [int(v.split("/")[0]) for v in parts[1:]]
                # OBJ is 1-based; negatives are relative to the vertices so far; 0 is no vertex (-1: refused below)
                idx = [i - 1 if i >= 0 else len(verts) + i for i in idx]
                tris.extend((idx[0], idx[k], idx[k + 1]) for k in range(1, len(idx) - 1))
    except ValueError as e:
        raise DataFormatError(f"{p}: malformed OBJ record ({e})") from None
    v = np.asarray(verts, dtype=np.float64).reshape(-1, 3)
    t = np.asarray(tris, dtype=np.int64).reshape(-1, 3)
    if t.size and (t.min() < 0 or t.max() >= len(v)):
        raise DataFormatError(f"{p}: OBJ face refers to a vertex outside 1..{len(v)}")
    return v, t


def sample_mesh(
    vertices: np.ndarray, triangles: np.ndarray, num_points: int, seed: Optional[int] = 0, path: Any = "<mesh>"
) -> np.ndarray:
    """Area-weighted uniform surface sampling -> float32 ``(num_points, 6)`` (xyz + face normal).

    Numpy rather than Open3D's ``sample_points_uniformly`` so the result depends only on ``seed``.
    """
    check_finite(vertices, path, "vertex coordinates")
    if len(triangles) == 0:
        raise DataFormatError(f"{path}: mesh has no faces to sample")
    a, b, c = (vertices[triangles[:, k]] for k in range(3))
    cross = np.cross(b - a, c - a)
    area2 = np.linalg.norm(cross, axis=1)
    total = area2.sum()
    if not np.isfinite(total) or total <= 0:
        raise DataFormatError(f"{path}: mesh has zero surface area")
    rng = np.random.default_rng(seed)
    face = rng.choice(len(triangles), size=num_points, p=area2 / total)
    u, v = rng.random(num_points), rng.random(num_points)
    flip = u + v > 1  # fold the unit square onto the triangle
    u[flip], v[flip] = 1 - u[flip], 1 - v[flip]
    pts = a[face] + u[:, None] * (b - a)[face] + v[:, None] * (c - a)[face]
    normals = cross[face] / np.maximum(area2[face], 1e-12)[:, None]
    return np.concatenate([pts, normals], axis=1).astype(np.float32)


def read_ply(path: PathLike, num_points: Optional[int] = None, seed: Optional[int] = 0) -> np.ndarray:
    """PLY via Open3D: a cloud gives its points (+normals); a mesh with faces is sampled to ``num_points``."""
    p = _require_file(path)
    try:
        import open3d as o3d
    except ImportError:  # pragma: no cover
        raise DataFormatError(f"{p}: reading PLY needs Open3D (pip install open3d-cpu)") from None
    mesh = o3d.io.read_triangle_mesh(str(p))
    if len(mesh.triangles) > 0:
        return sample_mesh(np.asarray(mesh.vertices), np.asarray(mesh.triangles), num_points or 2048, seed, p)
    return _read_open3d_cloud(p)


# ---------------------------------------------------------------------------------------------------------------
# dispatch
# ---------------------------------------------------------------------------------------------------------------


def read_point_cloud(path: PathLike, num_points: Optional[int] = None, seed: Optional[int] = None) -> np.ndarray:
    """Read any supported file -> float32 ``(N, 3+)`` (xyz first).

    Meshes (``.off``, ``.obj``, ``.ply`` with faces) are sampled area-weighted to ``num_points`` (default 2048) with
    ``seed`` (default 0, so a file always gives the same cloud). For point files ``num_points``/``seed`` are ignored:
    subsampling is the transforms' job.
    """
    p = Path(path)
    ext = _suffix(p)
    fmt = _POINT_FORMATS.get(ext)
    if fmt is None:
        raise DataFormatError(
            f"{p}: unsupported point-cloud extension {ext!r}; supported: {', '.join(point_cloud_extensions())}"
        )
    pts = fmt.read(p, num_points or 2048, 0 if seed is None else seed)
    return _finish(pts, p)


def _read_npy(p: Path, _num_points: int, _seed: int) -> np.ndarray:
    _require_file(p)
    try:
        pts = np.load(p, allow_pickle=False)  # a .npy is data; refuse object arrays (pickles)
    except ValueError as e:
        raise DataFormatError(f"{p}: not a plain numeric .npy array ({e})") from None
    if not np.issubdtype(pts.dtype, np.number):
        raise DataFormatError(f"{p}: .npy holds dtype {pts.dtype}, expected a numeric (N, 3+) array")
    return pts


def _read_mesh(read_mesh: Callable[[PathLike], Tuple[np.ndarray, np.ndarray]]):
    return lambda p, n, seed: sample_mesh(*read_mesh(p), n, seed, p)


# The built-in formats. Meshes, PCD and PLY files (ModelNet meshes, scans) are z-up; text and .npy clouds (ModelNet40
# resampled, ShapeNetPart) y-up by convention (a dataset's own up_axis wins).
register_point_format(".pcd", ".pcd.gz", read=lambda p, n, seed: read_pcd(p), up_axis="z")
register_point_format(".ply", read=read_ply, up_axis="z")
register_point_format(".off", read=_read_mesh(read_off), up_axis="z")
register_point_format(".obj", read=_read_mesh(read_obj), up_axis="z")
register_point_format(".npy", read=_read_npy)
register_point_format(".txt", ".txt.gz", ".xyz", ".xyz.gz", ".pts", read=lambda p, n, seed: read_text_points(p))


# ---------------------------------------------------------------------------------------------------------------
# restricted unpickler for the legacy .dat / .pkl caches
# ---------------------------------------------------------------------------------------------------------------

# Plain containers/scalars plus what numpy needs to rebuild arrays, dtypes and scalars (numpy 1.x and 2.x module
# names, pickle protocols 2-5). Nothing here can call an arbitrary function: every allowed global only builds data.
_SAFE_GLOBALS = (
    {
        # "__builtin__": protocol 0-2 pickles (Python 2's, or Python 3's at protocol 2) name the builtins module so;
        # pickle's own find_class maps it to "builtins", but this allow-list is checked before that mapping
        (mod, n)
        for mod in ("builtins", "__builtin__")
        for n in (
            "list",
            "dict",
            "tuple",
            "set",
            "frozenset",
            "int",
            "float",
            "complex",
            "str",
            "bytes",
            "bytearray",
            "bool",
            "slice",
            "range",
        )
    }
    | {
        ("__builtin__", "xrange"),  # Python 2's name of range (pickle maps it to builtins.range)
        ("collections", "OrderedDict"),
        ("_codecs", "encode"),  # Python-2 pickles of byte strings
    }
    | {
        (mod, name)
        for mod in ("numpy.core.multiarray", "numpy._core.multiarray")
        for name in ("_reconstruct", "scalar")
    }
    | {(mod, "_frombuffer") for mod in ("numpy.core.numeric", "numpy._core.numeric")}
    | {("numpy", "ndarray"), ("numpy", "dtype")}
)


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, source: str):
        super().__init__(file, encoding="latin1")  # latin1: Python-2 numpy pickles
        self._source = source

    def find_class(self, module: str, name: str):
        if (module, name) in _SAFE_GLOBALS:
            return super().find_class(module, name)
        # numpy scalar types (np.float32, np.int32, ...) appear as dtype arguments
        if module == "numpy" and name in _NUMPY_SCALARS:
            return getattr(np, name)
        raise UnsafePickleError(
            f"{self._source}: refusing to unpickle global '{module}.{name}': only plain containers, numbers, strings "
            "and numpy arrays are allowed in dataset pickles (this file may be crafted to run code)"
        )


_NUMPY_SCALARS = {
    "float16",
    "float32",
    "float64",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "bool_",
    "bool",  # numpy >= 2 pickles the np.bool_ type under its new name, numpy.bool
}


def safe_pickle_loads(data: bytes, source: str = "<bytes>") -> Any:
    """Unpickle ``data`` with the restricted allow-list (see :func:`safe_pickle_load`)."""
    try:
        return _RestrictedUnpickler(io.BytesIO(data), source).load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise DataFormatError(f"{source}: corrupt or truncated pickle ({type(e).__name__}: {e})") from None


def safe_pickle_load(path: PathLike) -> Any:
    """Load a legacy pickle (``.dat`` / ``.pkl``) accepting only plain containers, numbers, strings and numpy arrays.

    A pickle that references any other global (``os.system``, ``builtins.eval``, a class, ...) raises
    :class:`UnsafePickleError` before anything is called.
    """
    p = _require_file(path, "pickle file")
    return safe_pickle_loads(_read_bytes(p), str(p))


# ---------------------------------------------------------------------------------------------------------------
# HDF5
# ---------------------------------------------------------------------------------------------------------------


def read_h5_arrays(path: PathLike, required: Iterable[str], optional: Iterable[str] = ()) -> Dict[str, np.ndarray]:
    """Read whole datasets from an HDF5 file -> ``{key: array}``; truncated/corrupt files and missing keys raise
    :class:`DataFormatError` naming the file, the key and the keys present."""
    p = _require_file(path, "HDF5 file")
    try:
        import h5py
    except ImportError:  # pragma: no cover - h5py is a hard dependency
        raise DataFormatError(f"{p}: reading HDF5 needs h5py") from None
    out: Dict[str, np.ndarray] = {}
    try:
        with h5py.File(p, "r") as f:
            keys = sorted(f.keys())
            for k in required:
                if k not in f:
                    raise DataFormatError(f"{p}: missing HDF5 dataset '{k}' (found keys: {keys})")
            for k in list(required) + [k for k in optional if k in f]:
                out[k] = np.asarray(f[k][()])
    except DataFormatError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as e:  # h5py reports truncation/corruption as OSError
        raise DataFormatError(f"{p}: corrupt or truncated HDF5 file ({type(e).__name__}: {e})") from None
    return out
