"""Official weights by name: download, resume, verify, cache, one-line errors. No network: a loopback server."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hub_server import HubServer

from pointclora.models import create_model, hub, load_pretrained, to_point_mae_layout
from pointclora.models.hub import DownloadError, PretrainedFile

REPO = Path(__file__).resolve().parents[2]
NAME = "test_tiny_mae"


def _official_bytes(variant: str = "point_mae_tiny", seed: int = 0, **kwargs) -> bytes:
    """A pre-training file in Point-MAE's layout (``module.MAE_encoder.*``) for ``variant``'s encoder, plus the
    decoder-side key the real one has (``mask_token``)."""
    torch.manual_seed(seed)
    model = create_model(variant, **kwargs)
    encoder = {k: v for k, v in model.state_dict().items() if not k.startswith(("cls_head_finetune", "cls_"))}
    layout = to_point_mae_layout(encoder)
    layout["base_model"]["module.mask_token"] = torch.zeros(1, 1, model.trans_dim)
    buf = io.BytesIO()
    torch.save(layout, buf)
    return buf.getvalue()


@pytest.fixture
def hubenv(tmp_path, monkeypatch):
    """A private cache, a tiny table entry and a running server; yields the server."""
    monkeypatch.setenv("POINTCLORA_CACHE", str(tmp_path / "cache"))
    hub.register_pretrained_file(PretrainedFile(NAME, "https://example.invalid/tiny.pth", "point_mae_tiny"))
    with HubServer() as server:
        server.files[f"{NAME}.pth"] = _official_bytes()
        yield server
    hub._TABLE.pop(NAME, None)


def _leftovers(folder: Path):
    """Files in the cache besides lock files and verification stamps."""
    if not folder.exists():
        return []
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith((".lock", ".verified")))


def test_download_verifies_caches_and_loads(hubenv, monkeypatch):
    monkeypatch.setenv(hub.URL_ENV, hubenv.url("ok"))
    path = hub.download_pretrained(NAME)
    assert path == hub.hub_path(NAME) and path.parent == Path(os.environ["POINTCLORA_CACHE"]) / "hub"
    assert path.read_bytes() == hubenv.files[f"{NAME}.pth"]
    assert _leftovers(path.parent) == [path.name]  # no .part left
    # cached: a second call makes no request and trusts the verified, unchanged file
    with monkeypatch.context() as m:
        m.setattr(hub, "verify_pretrained_file", lambda *a: pytest.fail("re-verified an unchanged file"))
        hub.download_pretrained(NAME)
    assert len(hubenv.log) == 1
    # the three entry points load the same tensors
    torch.manual_seed(0)
    reference = create_model("point_mae_tiny")
    a = create_model("point_mae_tiny", pretrained=NAME)
    b = create_model("point_mae_tiny")
    load_pretrained(b, NAME, log=False)
    for key, value in reference.state_dict().items():
        if key.startswith("blocks.") or key.startswith("encoder."):
            assert torch.equal(a.state_dict()[key], value), key
            assert torch.equal(b.state_dict()[key], value), key


def test_ckpt_name_resolves_through_the_backbone_lookup(hubenv, monkeypatch):
    from pointclora.api.backbone import ensure_backbone

    monkeypatch.setenv(hub.URL_ENV, hubenv.url("ok"))
    assert ensure_backbone({"model": {"checkpoint": NAME}}) == hub.hub_path(NAME)


def test_resume_after_a_cut_connection(hubenv, monkeypatch):
    monkeypatch.setenv(hub.URL_ENV, hubenv.url("cut"))
    body = hubenv.files[f"{NAME}.pth"]
    path = hub.download_pretrained(NAME)
    assert path.read_bytes() == body
    assert [r[2] for r in hubenv.log] == [None, f"bytes={len(body) // 2}-"]  # second request resumed


def test_resume_of_a_part_left_by_an_earlier_call(hubenv, monkeypatch):
    monkeypatch.setenv(hub.URL_ENV, hubenv.url("ok"))
    body = hubenv.files[f"{NAME}.pth"]
    part = hub.hub_path(NAME).with_name(f"{NAME}.pth.part")
    part.parent.mkdir(parents=True)
    part.write_bytes(body[:1000])
    assert hub.download_pretrained(NAME).read_bytes() == body
    assert hubenv.log[0][2] == "bytes=1000-"


def test_server_without_ranges_starts_over(hubenv, monkeypatch):
    monkeypatch.setenv(hub.URL_ENV, hubenv.url("norange"))
    body = hubenv.files[f"{NAME}.pth"]
    part = hub.hub_path(NAME).with_name(f"{NAME}.pth.part")
    part.parent.mkdir(parents=True)
    part.write_bytes(b"garbage that is not a prefix")
    assert hub.download_pretrained(NAME).read_bytes() == body


@pytest.mark.parametrize(
    "mode,body,expect",
    [
        ("ok", "truncated", "truncated or corrupt"),
        ("html", None, "HTML page"),
        ("ok", "wrong_shapes", "wrong shape"),
    ],
)
def test_a_wrong_file_is_deleted_and_reported(hubenv, monkeypatch, mode, body, expect):
    monkeypatch.setenv(hub.URL_ENV, hubenv.url(mode))
    good = hubenv.files[f"{NAME}.pth"]
    if body == "truncated":
        hubenv.files[f"{NAME}.pth"] = good[: len(good) * 2 // 3]
    elif body == "wrong_shapes":  # another variant's encoder: Point-BERT's narrower mini-PointNet
        hubenv.files[f"{NAME}.pth"] = _official_bytes("point_bert_tiny")
    with pytest.raises(DownloadError) as info:
        hub.download_pretrained(NAME)
    message = str(info.value)
    assert "\n" not in message and expect in message and "deleted it" in message
    assert str(hub.hub_path(NAME)) in message
    assert _leftovers(hub.hub_cache_dir()) == []


def test_http_404_is_one_line_naming_url_and_path(hubenv, monkeypatch):
    monkeypatch.setenv(hub.URL_ENV, hubenv.url("missing"))
    with pytest.raises(DownloadError) as info:
        hub.download_pretrained(NAME)
    message = str(info.value)
    assert "\n" not in message and "404" in message
    assert f"{hubenv.url('missing')}/{NAME}.pth" in message and f"place it at {hub.hub_path(NAME)}" in message
    assert _leftovers(hub.hub_cache_dir()) == []


def test_no_server_at_all(tmp_path, monkeypatch):
    monkeypatch.setenv("POINTCLORA_CACHE", str(tmp_path / "cache"))
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv(hub.URL_ENV, f"http://127.0.0.1:{port}/ok")
    with pytest.raises(DownloadError) as info:
        create_model("point_mae_s", pretrained=True)  # the official default of the variant
    message = str(info.value)
    assert "\n" not in message and "refused" in message.lower()
    assert f"http://127.0.0.1:{port}/ok/point_mae_pretrain.pth" in message
    assert str(tmp_path / "cache" / "hub" / "point_mae_pretrain.pth") in message
    assert _leftovers(tmp_path / "cache" / "hub") == []


def test_offline_cli_error_is_one_line(tmp_path):
    env = {**os.environ, "POINTCLORA_CACHE": str(tmp_path), hub.URL_ENV: "http://127.0.0.1:9/x",
           "PYTHONPATH": str(REPO)}  # fmt: skip
    cmd = [sys.executable, str(REPO / "tools" / "probe.py"), "--weights", "point_mae_pretrain",
           "--cfg", "datasets/modelnet10_folder.yaml"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: cannot download"), out.stderr


def test_two_processes_end_with_one_good_file(hubenv, tmp_path):
    code = (
        "import sys; from pointclora.models import hub; "
        f"hub.register_pretrained_file(hub.PretrainedFile({NAME!r}, 'https://example.invalid/x', 'point_mae_tiny')); "
        f"print(hub.download_pretrained({NAME!r}))"
    )
    env = {**os.environ, hub.URL_ENV: hubenv.url("ok"), "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(2)]  # fmt: skip
    outs = [p.communicate()[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outs[0] == outs[1] == str(hub.hub_path(NAME))
    assert Path(outs[0]).read_bytes() == hubenv.files[f"{NAME}.pth"]
    assert len(hubenv.log) == 1  # the second process waited on the lock and found the file
    assert _leftovers(hub.hub_cache_dir()) == [f"{NAME}.pth"]


def test_a_hand_placed_wrong_file_is_reported_not_used(hubenv, monkeypatch):
    monkeypatch.setenv(hub.URL_ENV, hubenv.url("ok"))
    dest = hub.hub_path(NAME)
    dest.parent.mkdir(parents=True)
    dest.write_text("<html>login</html>")
    with pytest.raises(DownloadError, match="HTML page"):
        hub.download_pretrained(NAME)
    assert hubenv.log == []


def test_pinned_sha256(hubenv, monkeypatch):
    import hashlib

    monkeypatch.setenv(hub.URL_ENV, hubenv.url("ok"))
    good = hashlib.sha256(hubenv.files[f"{NAME}.pth"]).hexdigest()
    hub.register_pretrained_file(PretrainedFile(NAME, "https://example.invalid/x", "point_mae_tiny", sha256="0" * 64))
    with pytest.raises(DownloadError, match="SHA-256"):
        hub.download_pretrained(NAME)
    hub.register_pretrained_file(PretrainedFile(NAME, "https://example.invalid/x", "point_mae_tiny", sha256=good))
    assert hub.download_pretrained(NAME).is_file()


def test_table_names_every_official_file():
    entries = {n: hub.hub_entry(n) for n in hub.hub_names()}
    assert entries["point_mae_pretrain"].url == "https://github.com/Pang-Yatian/Point-MAE/releases/download/main/pretrain.pth"
    for name in ("scan_objbg", "scan_objonly", "scan_hardest", "modelnet_1k", "modelnet_8k", "part_seg"):
        assert entries[f"point_mae_{name}"].url.endswith(f"/main/{name}.pth")
    assert entries["point_mae_scan_objbg"].model_kwargs["num_classes"] == 15
    assert entries["point_mae_modelnet_8k"].model_kwargs["num_groups"] == 512
    assert hub.default_hub_file("point_mae_s") == "point_mae_pretrain"
    assert hub.default_hub_file("point_bert_s") == "point_bert_pretrain"


def test_official_variant_pretrained_true_end_to_end(tmp_path, monkeypatch):
    """``create_model("point_mae_s", pretrained=True)``: the real-size ViT-S layout (a generated file with the
    official key names and shapes) downloads, verifies and loads; official FPS semantics are switched on."""
    monkeypatch.setenv("POINTCLORA_CACHE", str(tmp_path / "cache"))
    with HubServer() as server:
        server.files["point_mae_pretrain.pth"] = _official_bytes("point_mae_s", seed=1)
        monkeypatch.setenv(hub.URL_ENV, server.url("ok"))
        model = create_model("point_mae_s", num_classes=15, pretrained=True)
    torch.manual_seed(1)
    reference = create_model("point_mae_s").state_dict()
    assert torch.equal(model.state_dict()["blocks.11.mlp.fc2.weight"], reference["blocks.11.mlp.fc2.weight"])
    assert model.group_divider.skip_near_origin is True
