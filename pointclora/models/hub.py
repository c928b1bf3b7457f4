"""Official pre-trained files by name: a table of known downloads, fetched, verified and cached on first use.

``create_model("point_mae_s", pretrained=True)``, ``load_pretrained(model, "point_mae_pretrain")`` and
``--ckpt point_mae_pretrain`` all end in :func:`download_pretrained`, which

- keeps the file in ``$POINTCLORA_CACHE/hub`` (default ``~/.cache/pointclora/hub``), the cache folder the toolkit
  already uses for the demo backbone;
- downloads to ``<file>.part`` with a progress bar (tqdm, only on a terminal), resuming a partial ``.part`` with an
  HTTP ``Range`` request where the server allows it, and renames it into place only once it is verified: it loads with
  ``torch.load(weights_only=True)``, its tensor names and shapes fit the variant the table names, and its SHA-256
  matches where the table pins one. A wrong file is deleted and reported;
- records ``<file>.verified`` (size and mtime), so a later call trusts the unchanged file without re-reading it;
- holds ``<file>.lock`` while downloading, so two processes asking at once end with one good file (the second waits,
  then finds it);
- fails offline or when refused with ONE line naming the URL, the error and the exact path where the user can put
  the file by hand (nothing half-written is left: a ``.part`` is kept only when the server resumes).

``$POINTCLORA_HUB_URL`` replaces every entry's URL by ``<base>/<name>.pth``: mirrors, and the tests' loopback
server. Entries are :class:`PretrainedFile` rows; :func:`register_pretrained_file` adds one (tests add a tiny one).
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import os
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from .checkpoint import CheckpointError, convert_state_dict, extract_state_dict, safe_torch_load

__all__ = [
    "PretrainedFile",
    "DownloadError",
    "register_pretrained_file",
    "hub_names",
    "hub_entry",
    "default_hub_file",
    "hub_cache_dir",
    "hub_path",
    "download_pretrained",
    "verify_pretrained_file",
]

#: Replaces every entry's URL by ``<base>/<name>.pth``: mirrors, tests.
URL_ENV = "POINTCLORA_HUB_URL"
_CHUNK = 1 << 20
_TIMEOUT_S = 30.0


@dataclasses.dataclass(frozen=True)
class PretrainedFile:
    """One known official file.

    Attributes:
        name: what users type (``--ckpt point_mae_pretrain``).
        url: direct download URL.
        variant: the registered model variant it loads into (``point_mae_s``).
        model_kwargs: constructor overrides the file was trained with (``num_groups``, ``num_classes``, and
            ``skip_near_origin=True``: official encoders saw pointnet2_ops' FPS centres).
        sha256: pinned digest of the file, or ``None`` where none is published.
        description: one line for listings.
    """

    name: str
    url: str
    variant: str
    model_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    sha256: Optional[str] = None
    description: str = ""

    @property
    def filename(self) -> str:
        return f"{self.name}.pth"


_TABLE: Dict[str, PretrainedFile] = {}
#: variant -> the entry ``create_model(variant, pretrained=True)`` loads.
_DEFAULTS: Dict[str, str] = {}


def register_pretrained_file(entry: PretrainedFile, default_for: Tuple[str, ...] = ()) -> PretrainedFile:
    """Add ``entry`` to the table; ``default_for`` names variants whose ``pretrained=True`` loads it."""
    _TABLE[entry.name] = entry
    for variant in default_for:
        _DEFAULTS[variant] = entry.name
    return entry


def hub_names() -> List[str]:
    return sorted(_TABLE)


def hub_entry(name: str) -> PretrainedFile:
    if name not in _TABLE:
        raise KeyError(f"no known pre-trained file {name!r}; known: {', '.join(hub_names())}")
    return _TABLE[name]


def default_hub_file(variant: str) -> Optional[str]:
    """The entry ``create_model(variant, pretrained=True)`` downloads, or ``None``."""
    return _DEFAULTS.get(variant)


def hub_cache_dir() -> Path:
    """``$POINTCLORA_CACHE/hub`` (default ``~/.cache/pointclora/hub``)."""
    root = os.environ.get("POINTCLORA_CACHE")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "pointclora") / "hub"


def hub_path(name: str) -> Path:
    """Where ``name`` is (or will be) cached: also where a user can place a hand-downloaded copy."""
    return hub_cache_dir() / hub_entry(name).filename


def _url(entry: PretrainedFile) -> str:
    base = os.environ.get(URL_ENV)
    return f"{base.rstrip('/')}/{entry.filename}" if base else entry.url


class DownloadError(CheckpointError):
    """A pre-trained file could not be fetched or was not the expected file (one-line message)."""


# --- verification ---------------------------------------------------------------------------------------------------
def _expected_shapes(entry: PretrainedFile) -> Tuple[Dict[str, Tuple[int, ...]], List[str]]:
    """The variant's tensor shapes and the names the file must provide (the encoder: every tensor outside the task
    modules, which pre-training files lack). Built on the CPU (the constructor reads values, so the meta device
    cannot build it): about a second for ViT-S, once per download."""
    from .registry import create_model

    model = create_model(entry.variant, **dict(entry.model_kwargs))
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    task = tuple(getattr(model, "default_train_modules", ()) or ())
    required = [k for k in shapes if not any(k == t or k.startswith(t + ".") for t in task)]
    return shapes, required


def verify_pretrained_file(path: os.PathLike, entry: PretrainedFile) -> None:
    """Raise :class:`CheckpointError` unless ``path`` is a weights-only checkpoint whose tensors fit
    ``entry.variant`` (every encoder tensor present, no shape differing) and whose SHA-256 matches a pinned one."""
    path = Path(path)
    if entry.sha256:
        digest = _sha256(path)
        if digest != entry.sha256.lower():
            raise CheckpointError(f"{path}: SHA-256 {digest[:16]}... is not the published {entry.sha256[:16]}...")
    incoming = convert_state_dict(extract_state_dict(safe_torch_load(path), str(path)))
    shapes, required = _expected_shapes(entry)
    wrong = [f"{k} {tuple(v.shape)} (expected {shapes[k]})" for k, v in incoming.items()
             if k in shapes and tuple(v.shape) != shapes[k]]  # fmt: skip
    missing = [k for k in required if k not in incoming]
    if wrong or missing:
        parts = []
        if wrong:
            parts.append(f"{len(wrong)} tensor(s) of the wrong shape: " + ", ".join(wrong[:4]))
        if missing:
            parts.append(f"{len(missing)} tensor(s) missing: " + ", ".join(missing[:4]))
        raise CheckpointError(f"{path} does not fit {entry.variant!r}: " + "; ".join(parts))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


# --- download -------------------------------------------------------------------------------------------------------
def _one_line(err: BaseException) -> str:
    text = str(getattr(err, "reason", None) or err).strip() or type(err).__name__
    return " ".join(text.split())


def _fetch(url: str, part: Path, progress: bool) -> bool:
    """Append the rest of ``url`` to ``part`` (resuming from its size where the server honours ``Range``).
    Returns whether the server accepts ranges (so a ``.part`` left after a failure can be resumed)."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "pointclora"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=_TIMEOUT_S)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # our .part is not a prefix the server recognises: start over
            part.unlink()
            return _fetch(url, part, progress)
        raise
    with response:
        resumable = response.headers.get("Accept-Ranges", "").lower() == "bytes"
        if have and response.status == 206 and response.headers.get("Content-Range", "").startswith(f"bytes {have}-"):
            mode, start = "ab", have
        else:  # the server ignored the range (200): the whole file comes again
            mode, start = "wb", 0
            resumable = resumable or response.status == 206
        length = response.headers.get("Content-Length")
        total = start + int(length) if length and length.isdigit() else None
        bar = _progress(total, start, part.name, progress)
        try:
            with open(part, mode) as f:
                while True:
                    block = response.read(_CHUNK)
                    if not block:
                        break
                    f.write(block)
                    bar.update(len(block))
        finally:
            bar.close()
        got = part.stat().st_size
        if total is not None and got < total:
            raise ConnectionError(f"connection closed after {got} of {total} bytes")
    return resumable


def _progress(total: Optional[int], initial: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    # disable=None: no bar when stderr is not a terminal (logs, CI), so captured output stays clean.
    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
                disable=None if enabled else True)  # fmt: skip


def download_pretrained(name: str, progress: bool = True, retries: int = 3, force: bool = False) -> Path:
    """The verified cached file of ``name`` (downloading it first when missing); see the module docstring.

    Raises :class:`DownloadError` (one line) when it cannot be fetched or is not the expected file.
    """
    from filelock import FileLock

    entry = hub_entry(name)
    dest = hub_path(name)
    url = _url(entry)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    by_hand = f"download {url} by hand and place it at {dest}"
    with FileLock(str(dest.with_name(dest.name + ".lock"))):
        if dest.is_file() and not force:
            if _stamp(dest) == _read_stamp(dest):
                return dest  # verified when it arrived and unchanged since
            try:
                verify_pretrained_file(dest, entry)
            except CheckpointError as err:  # a hand-placed (or damaged) file that is not the expected one
                raise DownloadError(f"{_one_line(err)}; delete it, or {by_hand}") from None
            _write_stamp(dest)
            return dest
        resumable, last = False, None
        for _ in range(max(1, retries)):
            try:
                resumable = _fetch(url, part, progress)
                last = None
                break
            except urllib.error.HTTPError as err:  # refused: retrying will not help
                last = err
                break
            except (urllib.error.URLError, http.client.HTTPException, socket.timeout, OSError) as err:
                last = err  # cut connection: the next try resumes from the .part where the server allows it
                if isinstance(err, urllib.error.URLError) and not part.exists():
                    break  # no connection at all (offline, no server): nothing to resume
        if last is not None:
            kept = part.exists() and part.stat().st_size > 0 and resumable
            if part.exists() and not kept:
                part.unlink()
            note = f" (the partial {part.name} is kept: the next call resumes it)" if kept else ""
            raise DownloadError(f"cannot download {name!r} from {url}: {_one_line(last)}; {by_hand}{note}") from None
        try:
            verify_pretrained_file(part, entry)
        except CheckpointError as err:
            part.unlink()
            raise DownloadError(
                f"downloaded {url} but it is not the expected file, deleted it: {_one_line(err)}; {by_hand}"
            ) from None
        os.replace(part, dest)  # same folder: atomic
        _write_stamp(dest)
    return dest


def _stamp(path: Path) -> str:
    """Size and modification time: a verified file that changed since is verified again."""
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _read_stamp(path: Path) -> Optional[str]:
    try:
        return _stamp_path(path).read_text().strip()
    except OSError:
        return None


def _write_stamp(path: Path) -> None:
    from ..utils.atomic import atomic_write_text

    atomic_write_text(_stamp(path), _stamp_path(path))


# --- the table ------------------------------------------------------------------------------------------------------
_MAE = "https://github.com/Pang-Yatian/Point-MAE/releases/download/main/"
_OFFICIAL = {"skip_near_origin": True}
register_pretrained_file(
    PretrainedFile("point_mae_pretrain", _MAE + "pretrain.pth", "point_mae_s", dict(_OFFICIAL),
                   description="Point-MAE ViT-S pre-trained on ShapeNet-55 (encoder; decoder keys skipped)"),
    default_for=("point_mae_s", "point_mae_s_seg"),
)  # fmt: skip
for _file, _classes, _groups, _what in (
    ("scan_objbg", 15, 128, "ScanObjectNN OBJ_BG (90.02 %)"),
    ("scan_objonly", 15, 128, "ScanObjectNN OBJ_ONLY (88.29 %)"),
    ("scan_hardest", 15, 128, "ScanObjectNN PB_T50_RS (85.18 %)"),
    ("modelnet_1k", 40, 64, "ModelNet40, 1k points (93.80 %)"),
    ("modelnet_8k", 40, 512, "ModelNet40, 8k points (94.04 %)"),
):
    register_pretrained_file(
        PretrainedFile(f"point_mae_{_file}", _MAE + f"{_file}.pth", "point_mae_s",
                       {**_OFFICIAL, "num_classes": _classes, "num_groups": _groups},
                       description=f"Point-MAE ViT-S fine-tuned on {_what}, encoder + head"),
    )  # fmt: skip
register_pretrained_file(
    PretrainedFile("point_mae_part_seg", _MAE + "part_seg.pth", "point_mae_s_seg", {**_OFFICIAL, "num_classes": 50},
                   description="Point-MAE ViT-S fine-tuned on ShapeNetPart (86.1 % mIoU)"),
)  # fmt: skip
# Point-BERT publishes its weights on Tsinghua Cloud (a direct link with ?dl=1) and BaiduYun (no direct link).
register_pretrained_file(
    PretrainedFile("point_bert_pretrain", "https://cloud.tsinghua.edu.cn/f/202b29805eea45d7be92/?dl=1",
                   "point_bert_s", dict(_OFFICIAL),
                   description="Point-BERT ViT-S pre-trained on ShapeNet (MoCo query encoder)"),
    default_for=("point_bert_s",),
)  # fmt: skip
