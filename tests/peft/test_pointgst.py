"""PointGST (--peft pointgst): inject, forward, closed-form counts, recorded outputs, the spectral bases against
naive references, the three quirks, save/load."""

import pytest
import torch
from peer_helpers import assert_adapter_round_trip, cloud, head_params, seeded_tiny

from pointclora.models import create_model
from pointclora.peft import (
    PeftConfigError,
    inject_adapters,
    make_peft_config,
    trainable_parameter_summary,
)
from pointclora.peft.pointgst import graph_basis, morton_keys


def _pcsa_params(c, rank, depth):
    return depth * (2 * 2 * rank + (c * rank + rank) + (rank * c + c) + (rank * rank + rank))  # 2 LN, down, up, adapt1


def test_point_mae_s_counts_equal_the_official_model():
    model = create_model("point_mae_s", num_classes=15, num_groups=128)
    inject_adapters(model, make_peft_config("pointgst"))
    s = trainable_parameter_summary(model)
    # PEERS.md measured 0.623 M on the official model (bench/peers_parity.py: 622,831 both)
    closed_form = _pcsa_params(384, 36, 12) + head_params(768, 256, 15) + 768
    assert s["trainable_params"] == closed_form == 622_831


def test_tiny_count_and_recorded_logits():
    model = seeded_tiny("pointgst")
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == (
        _pcsa_params(32, 4, 2) + head_params(64, 32, 5) + 64) == 4_149
    with torch.no_grad():
        out = model(cloud())
    expected = torch.tensor([[0.15503718, -0.46485931, 0.10188398, 0.37029219, 1.19856179],
                             [0.28748763, -0.55359370, -0.06044078, 0.51484329, 1.26152003]])  # fmt: skip
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)


def test_graph_basis_diagonalises_the_naive_laplacian():
    c = torch.rand(2, 6, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    U = graph_basis(c, batch_min_distance=False)
    for b in range(2):
        d = ((c[b, :, None] - c[b, None]) ** 2).sum(-1).sqrt()
        a = 1 / (d / d[d > 0].min() + torch.eye(6, dtype=torch.float64))
        deg = a.sum(1) + 1e-6
        lap = torch.eye(6, dtype=torch.float64) - a / deg.sqrt()[:, None] / deg.sqrt()[None]
        torch.testing.assert_close(U[b].T @ U[b], torch.eye(6, dtype=torch.float64))
        off = U[b].T @ lap @ U[b]
        torch.testing.assert_close(off - torch.diag(torch.diagonal(off)), torch.zeros(6, 6, dtype=torch.float64))


def test_morton_keys_match_a_naive_bit_loop():
    vals = [0, 1, 5, 99, -1, -37, 100]
    x, y, z = (torch.tensor(v) for v in (vals, vals[::-1], [3] * 7))
    got = morton_keys(x, y, z)
    for i in range(7):
        want = 0
        for bit in range(16):  # low 16 bits of the two's complement (the official tables)
            want |= ((vals[i] >> bit) & 1) << (3 * bit + 2) | ((vals[::-1][i] >> bit) & 1) << (3 * bit + 1)
            want |= ((3 >> bit) & 1) << (3 * bit)
        assert int(got[i]) == want


def test_batch_min_distance_quirk_makes_a_cloud_depend_on_its_batch():
    pts = cloud(batch=3)
    official = seeded_tiny("pointgst")
    fixed = seeded_tiny("pointgst", batch_min_distance=False)
    with torch.no_grad():
        alone, together = official(pts[:1]), official(pts)[:1]
        assert not torch.allclose(alone, together, atol=1e-6)
        torch.testing.assert_close(fixed(pts[:1]), fixed(pts)[:1], rtol=0, atol=1e-5)


def test_transpose_and_zorder_options_change_the_model():
    with torch.no_grad():
        base = seeded_tiny("pointgst")(cloud())
        for option in ({"transpose_basis": True}, {"zorder_wraparound": False}):
            assert not torch.allclose(seeded_tiny("pointgst", **option)(cloud()), base, atol=1e-6), option


def test_save_load_round_trip(tmp_path):
    model = seeded_tiny("pointgst")
    assert_adapter_round_trip(model, tmp_path / "a")


def test_bad_options_are_clear_errors():
    with pytest.raises(PeftConfigError, match="local=32 must divide the model's 16 groups"):
        inject_adapters(create_model("point_mae_tiny", num_classes=5), make_peft_config("pointgst"))
    with pytest.raises(PeftConfigError, match="transpose_basis must be true or false"):
        make_peft_config("pointgst", transpose_basis="yes")
