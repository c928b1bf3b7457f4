"""PPT's part-segmentation variant (official ``segmentation/models/pt.py``) on PointTransformerSeg: counts and the
label_conv quirk, a naive re-implementation of the official forward, recorded outputs, save/load, and
``segment --peft ppt`` end to end (kill + resume exact, evaluate gives the run's numbers back)."""

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from peer_helpers import assert_segment_tool_resumes_and_evaluates, seeded_tiny_seg

from pointclora.models import create_model
from pointclora.peft import adapter_state_names, inject_adapters, load_adapter, make_peft_config, save_adapter

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))


def _cloud(seed=3, n=128):
    return torch.randn(2, n, 3, generator=torch.Generator().manual_seed(seed))


def _mlp(c, hidden=128):
    return c * hidden + hidden + hidden * c + c


def test_point_mae_s_counts_equal_the_official_model():
    model = create_model("point_mae_s_seg", num_classes=50, num_categories=16)
    head = sum(p.numel() for n, p in model.named_parameters() if n.split(".")[0] in model.head_modules)
    label = sum(p.numel() for p in model.label_conv.parameters())
    first = sum(p.numel() for p in model.encoder.first_conv.parameters())
    pos = sum(p.numel() for p in model.pos_embed.parameters())
    inject_adapters(model, make_peft_config("ppt"))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert not any(n.startswith("label_conv.") for n in trainable)  # the official filter misses it
    assert "encoder.first_conv.0.weight" in trainable and "pos_embed.0.weight" in trainable
    count = sum(p.numel() for p in model.parameters() if p.requires_grad)
    # bench/peers_seg_parity.py: 5,617,842 on the official model with its own filter
    assert count == head - label + first + pos + 3 * _mlp(384) == 5_617_842
    # frozen but saved: label_conv comes from no pre-trained checkpoint
    assert "label_conv.0.weight" in adapter_state_names(model)


def _naive_official_forward(model, points, category):
    """The official ``get_model.forward`` and ``TransformerEncoder.forward`` written out on our modules."""
    ext = model.extensions.ppt
    G = model.num_groups
    tokens, pos, centers = model.tokenize(points)  # the extension's on_tokens has run: [patches, copies]
    assert torch.equal(tokens[:, :G], tokens[:, G:]) and tokens.shape[1] == 2 * G
    x = tokens
    feats = []
    for i, block in enumerate(model.blocks):
        x = (x + pos).clone()
        x[:, 1 : G + 1] = x[:, 1 : G + 1] + ext.prompt_mlp(x[:, 1 : G + 1])
        x[:, -G:] = x[:, -G:] + ext.prompt_pos_mlp(x[:, -G:])
        h = x + block.attn(block.norm1(x))
        x = h + block.mlp(block.norm2(h)) + ext.prompt_all_mlp(h)
        if i in model.fetch_layers:
            feats.append(model.norm(x).transpose(1, 2))
    allf = torch.cat(feats, 1)  # (B, C·L, 2G)
    label = model.label_conv(F.one_hot(category, model.num_categories).float().unsqueeze(-1)).squeeze(-1)
    N = points.shape[1]
    g = torch.cat([allf.max(2).values, allf.mean(2), label], 1).unsqueeze(-1).expand(-1, -1, N)
    x = torch.cat([model.propagation_0(points, centers, allf[:, :, :G]), g], 1)
    x = F.relu(model.bns2(model.convs2(F.relu(model.bns1(model.convs1(x))))))
    return model.convs3(x).transpose(1, 2)


def test_forward_equals_the_naive_official_algorithm():
    model = seeded_tiny_seg("ppt")
    pts, cat = _cloud(), torch.tensor([0, 2])
    with torch.no_grad():
        ours = model(pts, cat)
        ref = _naive_official_forward(model, pts, cat)
        plain = create_model("point_mae_tiny_seg", num_classes=10, num_categories=3).eval()
        plain.load_state_dict({k: v for k, v in model.state_dict().items() if ".extensions." not in k
                               and not k.startswith("extensions.")})  # fmt: skip
        base = plain(pts, cat)
    assert ours.shape == (2, 128, 10)
    assert torch.allclose(ours, ref, atol=1e-5, rtol=0)
    assert (base - ours).abs().max() > 1e-2  # the prompts change the output


def test_recorded_logits_of_a_seeded_tiny_model():
    model = seeded_tiny_seg("ppt")
    with torch.no_grad():
        out = model(_cloud(), torch.tensor([0, 2]))
    assert torch.allclose(out[:, :2, :3].reshape(-1), torch.tensor(RECORDED), atol=1e-4, rtol=0)


RECORDED = [-0.02834, 0.49297, -0.8475, -0.0213, 0.49415, -0.83616, -0.01506, 0.41987, -0.74299, -0.00884, 0.42678,
            -0.69265]  # fmt: skip


def test_save_load_round_trip(tmp_path):
    model = seeded_tiny_seg("ppt")
    save_adapter(model, tmp_path / "a")
    fresh = create_model("point_mae_tiny_seg", num_classes=10, num_categories=3)
    fresh.load_state_dict({k: v for k, v in model.state_dict().items() if k in fresh.state_dict()})
    load_adapter(fresh, tmp_path / "a")
    fresh.eval()
    pts, cat = _cloud(), torch.tensor([1, 0])
    with torch.no_grad():
        assert torch.equal(fresh(pts, cat), model(pts, cat))


def test_segment_tool_ppt_resume_and_evaluate(tmp_path, monkeypatch):
    assert_segment_tool_resumes_and_evaluates("ppt", tmp_path, monkeypatch)
