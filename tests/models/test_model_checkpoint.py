import json
import logging
import os
from pathlib import Path

import pytest
import torch

from pointclora.models import CheckpointError, create_model, load_pretrained, to_point_mae_layout

KEYS_JSON = Path(__file__).parent / "data" / "point_mae_pretrain_keys.json"


def _official_pretrain_checkpoint(path: Path) -> dict:
    """Write a file in the official Point-MAE pretrain.pth layout (keys and shapes from the reference JSON)."""
    shapes = json.loads(KEYS_JSON.read_text())
    g = torch.Generator().manual_seed(0)
    state = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7, dtype=torch.int64)
        else:
            state[key] = torch.randn(shape, generator=g)
    torch.save({"base_model": state, "epoch": 300, "metrics": {"acc": torch.tensor(0.0)}}, path)
    return state


def test_official_pretrain_layout_loads_with_exact_missing_and_unexpected(tmp_path, caplog):
    path = tmp_path / "pretrain.pth"
    state = _official_pretrain_checkpoint(path)
    assert len(state) == 209
    model = create_model("point_mae_s", num_classes=15)
    with caplog.at_level(logging.INFO, logger="pointclora.models.checkpoint"):
        result = load_pretrained(model, path)
    head = sorted(k for k in model.state_dict() if k.startswith("cls_head_finetune"))
    assert result.missing_keys == sorted(["cls_pos", "cls_token", *head])
    assert len(result.unexpected_keys) == 53
    assert all(
        k.startswith(("mask_token", "decoder_pos_embed", "MAE_decoder", "increase_dim")) for k in result.unexpected_keys
    )
    assert len(result.loaded_keys) == 156
    torch.testing.assert_close(
        model.blocks[3].attn.qkv.weight, state["module.MAE_encoder.blocks.blocks.3.attn.qkv.weight"]
    )
    assert int(model.encoder.first_conv[1].num_batches_tracked) == 7
    assert "missing keys" in caplog.text and "unexpected keys (53)" in caplog.text


def test_round_trip_through_official_layout(tmp_path):
    src = create_model("point_mae_tiny", num_classes=4)
    encoder_state = {k: v for k, v in src.state_dict().items() if not k.startswith(("cls_", "cls_head"))}
    torch.save(to_point_mae_layout(encoder_state), tmp_path / "ours_as_official.pth")
    dst = create_model("point_mae_tiny", num_classes=4)
    result = load_pretrained(dst, tmp_path / "ours_as_official.pth")
    assert result.unexpected_keys == [] and result.missing_keys == sorted(
        k for k in dst.state_dict() if k.startswith(("cls_", "cls_head"))
    )
    with torch.no_grad():  # new in fine-tuning, not part of the pre-trained layout
        dst.cls_token.copy_(src.cls_token)
        dst.cls_pos.copy_(src.cls_pos)
    points = torch.randn(2, 128, 3)
    torch.testing.assert_close(dst.eval().forward_features(points), src.eval().forward_features(points))


@pytest.mark.parametrize(
    "prefix_in_file,prefix_arg",
    [("module.", None), ("", None), ("ACT_encoder.", None), ("module.custom_enc.", "custom_enc.")],
)
def test_prefixes_and_ddp_wrappers(tmp_path, prefix_in_file, prefix_arg):
    src = create_model("point_mae_tiny", num_classes=3)
    sd = {prefix_in_file + k: v for k, v in src.state_dict().items()}
    torch.save({"model": sd}, tmp_path / "c.pth")
    dst = create_model("point_mae_tiny", num_classes=3)
    result = load_pretrained(dst, tmp_path / "c.pth", prefix=prefix_arg)
    assert result.missing_keys == [] and result.unexpected_keys == []
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k


def test_point_bert_layout(tmp_path):
    src = create_model("point_bert_tiny", num_classes=3)
    sd = {f"transformer_q.{k}": v for k, v in src.state_dict().items() if not k.startswith("cls_head_finetune")}
    sd = {k.replace("transformer_q.blocks.", "transformer_q.blocks.blocks."): v for k, v in sd.items()}
    sd["transformer_q.mask_token"] = torch.zeros(1, 1, 32)
    sd["transformer_q.lm_head.weight"] = torch.zeros(10, 32)
    sd["transformer_q.cls_head.0.weight"] = torch.zeros(4, 32)
    sd["transformer_k.norm.weight"] = torch.zeros(32)
    sd["dvae.codebook"] = torch.zeros(10, 8)
    sd["queue"] = torch.zeros(4, 8)
    torch.save({"base_model": sd}, tmp_path / "bert.pth")
    dst = create_model("point_bert_tiny", num_classes=3)
    result = load_pretrained(dst, tmp_path / "bert.pth")
    assert result.unexpected_keys == ["lm_head.weight", "mask_token"]
    assert all(k.startswith("cls_head_finetune") for k in result.missing_keys)
    assert torch.equal(dst.cls_token, src.cls_token)  # Point-BERT's cls token is pre-trained


def test_shape_mismatch_names_key_and_shapes(tmp_path):
    src = create_model("point_mae_tiny", num_classes=3)
    torch.save({"model": src.state_dict()}, tmp_path / "c.pth")
    dst = create_model("point_mae_tiny", num_classes=5)
    with pytest.raises(CheckpointError, match=r"cls_head_finetune.8.weight: checkpoint \(3, 32\) vs model \(5, 32\)"):
        load_pretrained(dst, tmp_path / "c.pth")


def test_nothing_matched_is_an_error(tmp_path):
    torch.save({"model": {"foo.weight": torch.zeros(2)}}, tmp_path / "c.pth")
    with pytest.raises(CheckpointError, match="no key matches the model"):
        load_pretrained(create_model("point_mae_tiny", num_classes=3), tmp_path / "c.pth")


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned_by_checkpoint",))


def test_arbitrary_pickle_is_refused_not_executed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"model": {"w": torch.zeros(1)}, "payload": _Evil()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="refusing to load .*arbitrary code"):
        load_pretrained(create_model("point_mae_tiny", num_classes=3), tmp_path / "evil.pth")
    assert not (tmp_path / "pwned_by_checkpoint").exists()


def test_missing_and_corrupt_files(tmp_path):
    model = create_model("point_mae_tiny", num_classes=3)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_pretrained(model, tmp_path / "nope.pth")
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.pth"):
        load_pretrained(model, tmp_path / "bad.pth")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="no state dict found"):
        load_pretrained(model, tmp_path / "list.pth")


def test_strict_mode(tmp_path):
    src = create_model("point_mae_tiny", num_classes=3)
    sd = {k: v for k, v in src.state_dict().items() if not k.startswith("cls_head")}
    torch.save(sd, tmp_path / "c.pth")
    with pytest.raises(CheckpointError, match="strict load failed"):
        load_pretrained(create_model("point_mae_tiny", num_classes=3), tmp_path / "c.pth", strict=True)
