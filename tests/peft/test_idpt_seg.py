"""IDPT's part-segmentation variant (official ``segmentation/models/prompt_pt3.py``) on PointTransformerSeg: counts,
a naive re-implementation of the official forward, recorded outputs, save/load, and ``segment --peft idpt``
end to end (kill + resume exact, evaluate gives the run's numbers back)."""

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from peer_helpers import assert_segment_tool_resumes_and_evaluates
from peer_helpers import seeded_tiny_seg as _seeded

from pointclora.models import create_model
from pointclora.peft import adapter_state_names, inject_adapters, load_adapter, make_peft_config, save_adapter

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))


def seeded_tiny_seg(seed: int = 0) -> torch.nn.Module:
    return _seeded("idpt", seed)


def _cloud(seed=3, n=128):
    return torch.randn(2, n, 3, generator=torch.Generator().manual_seed(seed))


def _mlp_prompt_params(c):  # Conv1d(C->C, no bias) + BN1d, and the official unused bn5 (frozen here)
    return c * c + 2 * c


def test_point_mae_s_counts_equal_the_official_model():
    model = create_model("point_mae_s_seg", num_classes=50, num_categories=16)
    plain = sum(p.numel() for n, p in model.named_parameters() if n.split(".")[0] in model.head_modules)
    inject_adapters(model, make_peft_config("idpt"))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert not any(".bn5." in n for n in trainable) and "extensions.idpt.prompt_cls_pos" in trainable
    # bench/peers_seg_parity.py: official only_new filter 5,686,066 = ours + three unused bn5 (3 x 768)
    count = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert count == plain + 3 * _mlp_prompt_params(384) + 384 == 5_683_762
    assert count + 3 * 2 * 384 == 5_686_066
    assert sorted(model.extensions.idpt.prompts) == ["11", "3", "7"]


def _naive_official_forward(model, points, category):
    """The official ``get_model.forward`` + ``TransformerPromptEncoderLayerI.forward`` written out on our modules."""
    ext = model.extensions.idpt
    G = model.num_groups
    tokens, pos, centers = model.tokenize(points)
    x, feats = tokens, []
    for i, block in enumerate(model.blocks):
        if i in model.fetch_layers:
            x, p = x[:, -G:], pos[:, -G:]
            prompt = ext.prompts[str(i)].conv5(x.transpose(1, 2)).max(dim=-1).values.unsqueeze(1)
            x = torch.cat([prompt, x], 1)
            p = torch.cat([ext.prompt_cls_pos.expand(x.shape[0], -1, -1), p], 1)
            x = block(x + p)
            feats.append(model.norm(torch.cat([prompt, x], 1)))
            x = x[:, -G:]
        else:
            x = block(x + pos[:, -x.shape[1] :])
    patches = torch.cat([f[:, -G:].transpose(1, 2) for f in feats], 1)
    glob = torch.cat([f[:, 0] for f in feats] + [f[:, 1] for f in feats], 1)
    label = model.label_conv(F.one_hot(category, model.num_categories).float().unsqueeze(-1)).squeeze(-1)
    N = points.shape[1]
    g = torch.cat([glob, label], 1).unsqueeze(-1).expand(-1, -1, N)
    x = torch.cat([model.propagation_0(points, centers, patches), g], 1)
    x = F.relu(model.bns2(model.convs2(F.relu(model.bns1(model.convs1(x))))))
    return model.convs3(x).transpose(1, 2)


def test_forward_equals_the_naive_official_algorithm():
    model = seeded_tiny_seg()
    pts, cat = _cloud(), torch.tensor([0, 2])
    with torch.no_grad():
        ours = model(pts, cat)
        ref = _naive_official_forward(model, pts, cat)
    assert ours.shape == (2, 128, 10)
    assert torch.allclose(ours, ref, atol=1e-5, rtol=0)
    # the prompts change the output: the same weights without the extension give other logits
    plain = create_model("point_mae_tiny_seg", num_classes=10, num_categories=3).eval()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("extensions.")})
    with torch.no_grad():
        assert (plain(pts, cat) - ours).abs().max() > 1e-2


def test_recorded_logits_of_a_seeded_tiny_model():
    model = seeded_tiny_seg()
    with torch.no_grad():
        out = model(_cloud(), torch.tensor([0, 2]))
    recorded = torch.tensor(RECORDED)
    assert torch.allclose(out[:, :2, :3].reshape(-1), recorded, atol=1e-4, rtol=0)


RECORDED = [0.04681, 0.43677, -0.7401, 0.06272, 0.41893, -0.73415, -0.15805, 0.22534, -0.95188, -0.08035, 0.25437,
            -0.88327]  # fmt: skip


def test_save_load_round_trip(tmp_path):
    model = seeded_tiny_seg()
    names = adapter_state_names(model)
    assert "extensions.idpt.prompt_cls_pos" in names and "extensions.idpt.prompts.0.conv5.1.running_var" in names
    save_adapter(model, tmp_path / "a")
    fresh = create_model("point_mae_tiny_seg", num_classes=10, num_categories=3)
    base = {k: v for k, v in model.state_dict().items() if k in fresh.state_dict()}
    fresh.load_state_dict(base)
    load_adapter(fresh, tmp_path / "a")
    fresh.eval()
    pts, cat = _cloud(), torch.tensor([1, 0])
    with torch.no_grad():
        assert torch.equal(fresh(pts, cat), model(pts, cat))


def test_segment_tool_idpt_resume_and_evaluate(tmp_path, monkeypatch):
    assert_segment_tool_resumes_and_evaluates("idpt", tmp_path, monkeypatch)



def test_methods_without_an_official_segmentation_model_still_refuse():
    from pointclora.peft import PeftConfigError

    with pytest.raises(PeftConfigError, match="dapt.*classification only"):
        inject_adapters(create_model("point_mae_tiny_seg", num_classes=4), make_peft_config("dapt", rank=4))
