"""The demo's path: ``model.checkpoint`` is missing and the config has a ``pretrain`` section, so
``tools/finetune.py`` pre-trains the backbone first into the cache folder (never into the installed package), and
fine-tunes from it; a second run finds it there."""

import torch

from pointclora.cli.finetune import main
from pointclora.models import create_model, extract_state_dict, load_pretrained

CFG = """\
_base_: [adapters/clora.yaml]
dataset: {{name: synthetic, num_samples: 24, num_points: 64, num_classes: 4}}
model: {{name: point_mae_tiny, checkpoint: {ckpt}}}
data: {{num_points: 64, batch_size: 8, eval_batch_size: 16}}
schedule: {{epochs: 1, warmup_epochs: 0}}
pretrain:
  dataset: {{name: synthetic, num_samples: 32, num_points: 64}}
  model: {{name: point_mae_tiny}}
  data: {{num_points: 64, batch_size: 8, eval_batch_size: 16}}
  schedule: {{epochs: 1, warmup_epochs: 0}}
  pretrain: {{mask_ratio: 0.6, decoder_depth: 1, max_val_samples: 8}}
"""


def test_missing_backbone_is_pretrained_first(tmp_path, monkeypatch):
    monkeypatch.setenv("POINTCLORA_CACHE", str(tmp_path / "cache"))
    cfg = tmp_path / "demo.yaml"
    cfg.write_text(CFG.format(ckpt="assets/backbone.pth"))
    assert main(["--cfg", str(cfg), "--output", str(tmp_path / "run"), "--device", "cpu", "--quiet"]) == 0
    ckpt = tmp_path / "cache" / "backbone.pth"
    log = (tmp_path / "run" / "log.txt").read_text()
    assert ckpt.is_file(), log
    assert "pre-training it first" in log and str(ckpt) in log
    assert (tmp_path / "cache" / "backbone-pretrain-run" / "metrics.json").is_file()  # the pre-training run folder
    # The exported encoder is a complete backbone for the classifier: only the new head and cls tokens are missing.
    result = load_pretrained(create_model("point_mae_tiny", num_classes=4), ckpt, log=False)
    assert all(k.startswith(("cls_head_finetune", "cls_token", "cls_pos")) for k in result.missing_keys)
    assert result.unexpected_keys == []
    # ... and the fine-tuning run used it: its frozen encoder weights are the exported ones.
    exported = extract_state_dict(torch.load(ckpt, weights_only=True))
    trained = torch.load(tmp_path / "run" / "checkpoints" / "last.pth", weights_only=True)["model"]
    for key in ("pos_embed.0.weight", "blocks.0.norm1.weight", "encoder.first_conv.0.weight"):
        assert torch.equal(trained[key], exported[key]), key
    # A second demo run reuses the cached backbone instead of pre-training again.
    assert main(["--cfg", str(cfg), "--output", str(tmp_path / "run2"), "--device", "cpu", "--quiet"]) == 0
    assert "made by an earlier demo run" in (tmp_path / "run2" / "log.txt").read_text()
