import pytest
import torch
from peft_helpers import randomize_adapters, tiny

from pointclora.peft import (
    CLoRAConfig,
    CLoRALinear,
    adapter_parameter_groups,
    inject_adapters,
    merge_adapters,
    sade_loss,
    sade_loss_naive,
    trainable_parameter_summary,
    unmerge_adapters,
)


def test_step0_output_equals_frozen(points):
    frozen = tiny().eval()
    model = inject_adapters(tiny(), CLoRAConfig(r=4, num_bases=3)).eval()
    with torch.no_grad():
        assert torch.equal(model(points), frozen(points))


def test_efficient_forward_equals_delta_weight():
    """The einsum path computes exactly x ΔWᵀ with ΔW = s Σ_h B_h Q_h A_h built by hand from the stacked factors."""
    model = randomize_adapters(inject_adapters(tiny(), CLoRAConfig(r=4, num_bases=3, alpha=6.0)))
    layer = model.blocks[0].attn.qkv
    assert isinstance(layer, CLoRALinear) and layer.n_splits == 3
    bank, r = layer.bank, layer.r
    x = torch.randn(2, 7, layer.in_features, dtype=torch.float64)
    A, B, Q = bank.A.double(), bank.B.double(), layer.Q.double()
    by_hand = torch.cat(
        [sum(B[:, h * r:(h + 1) * r] @ Q[j, h] @ A[h * r:(h + 1) * r] for h in range(3)) for j in range(3)]
    ) * (6.0 / 4)
    assert torch.allclose(layer.delta_weight().double(), by_hand, atol=1e-6)
    with torch.no_grad():
        got = layer.adapter_delta(x.float()).double()
    assert torch.allclose(got, x @ by_hand.T, atol=1e-5)


def test_merge_equals_unmerged_and_unmerge_restores(points):
    # s = alpha / r = 1.5, not the default 1: a merge that dropped the scaling would show
    model = randomize_adapters(inject_adapters(tiny(), CLoRAConfig(r=4, num_bases=2, alpha=6.0))).eval()
    base = {n: t.clone() for n, t in model.state_dict().items() if "base_layer" in n}
    with torch.no_grad():
        before = model(points)
        merge_adapters(model)
        assert all(m.merged for m in model.modules() if isinstance(m, CLoRALinear))
        assert not torch.allclose(model.blocks[0].mlp.fc1.base_layer.weight, base["blocks.0.mlp.fc1.base_layer.weight"])
        merged = model(points)
        fc1, r = model.blocks[0].mlp.fc1, 4
        A, B, Q = fc1.bank.A, fc1.bank.B, fc1.Q[0]
        by_hand = 1.5 * sum(B[:, h * r : (h + 1) * r] @ Q[h] @ A[h * r : (h + 1) * r] for h in range(2))
        moved = fc1.base_layer.weight - base["blocks.0.mlp.fc1.base_layer.weight"]
        torch.testing.assert_close(moved, by_hand, rtol=1e-4, atol=1e-6)
        unmerge_adapters(model)
        after = model(points)
    assert torch.allclose(merged, before, atol=1e-5)
    assert torch.allclose(after, before, atol=1e-6)
    for n, t in base.items():
        assert torch.allclose(model.state_dict()[n], t, atol=1e-6), n


def test_banks_owned_once_and_shared_by_storage():
    model = inject_adapters(tiny(), CLoRAConfig(r=4, num_bases=2))
    layers = [m for m in model.modules() if isinstance(m, CLoRALinear)]
    assert len(layers) == 2 * 4  # 2 blocks × (qkv, proj, fc1, fc2)
    by_key = {}
    for layer in layers:
        by_key.setdefault(layer.bank_key, []).append(layer)
    assert set(by_key) == {"32x32", "32x128", "128x32"}
    for key, group in by_key.items():
        owner = model.clora_banks[key]
        assert {layer.bank.A.data_ptr() for layer in group} == {owner.A.data_ptr()}
        assert {layer.bank.B.data_ptr() for layer in group} == {owner.B.data_ptr()}
    names = [n for n, _ in model.named_parameters()]
    assert sum(n.endswith(".A") for n in names) == 3  # each bank tensor appears once in parameters()
    assert sum(k.startswith("clora_banks.") for k in model.state_dict()) == 6
    assert not any("bank" in n for n, _ in layers[0].named_parameters())


@pytest.mark.parametrize("share", ["shape", "block"])
@pytest.mark.parametrize("r, p", [(4, 2), (2, 3)])
def test_trainable_counts_closed_form_per_shape_group(share, r, p):
    model = inject_adapters(tiny(), CLoRAConfig(r=r, num_bases=p, share=share))
    groups = adapter_parameter_groups(model)
    C, H, depth = 32, 128, 2
    shapes = {"32x32": (C, C, 4), "32x128": (C, H, 1), "128x32": (H, C, 1)}  # (in, out, LRMs per block)
    expected_total = 0
    for key, (i, o, per_block) in shapes.items():
        blocks = [f"block{b}_" for b in range(depth)] if share == "block" else [""]
        m_g = per_block * (1 if share == "block" else depth)
        for prefix in blocks:
            g = groups[prefix + key]
            closed = p * r * (i + o) + m_g * p * r * r
            assert (g["lrms"], g["params"]) == (m_g, closed)
            expected_total += closed
    summary = trainable_parameter_summary(model)
    assert summary["adapter_params"] == expected_total
    head = sum(t.numel() for t in model.cls_head_finetune.parameters())
    assert summary["trainable_params"] == expected_total + 2 * C + head
    assert summary["trainable_params_without_head"] == expected_total + 2 * C


def test_point_mae_s_counts_match_clora_md():
    from pointclora.models import create_model

    torch.manual_seed(0)
    model = inject_adapters(create_model("point_mae_s", num_classes=15, num_groups=128), CLoRAConfig())
    s = trainable_parameter_summary(model)
    assert (s["adapter_params"], s["trainable_params"], s["trainable_params_without_head"]) == (165888, 434191, 166656)
    assert s["total_params"] == 22_093_327 + 165_888


def test_sade_gram_form_equals_naive_float64():
    model = inject_adapters(tiny(), CLoRAConfig(r=3, num_bases=4, share="block")).double()
    randomize_adapters(model, scale=0.5)
    fast, naive = sade_loss(model), sade_loss_naive(model)
    assert fast.dtype == torch.float64 and fast.item() > 1e-3  # random factors are far from orthogonal
    assert abs(fast.item() - naive.item()) <= 1e-9 * abs(naive.item())
    # gradients agree too
    params = [p for p in model.parameters() if p.requires_grad and p.dim() > 1]
    g_fast = torch.autograd.grad(fast, params, allow_unused=True)
    g_naive = torch.autograd.grad(sade_loss_naive(model), params, allow_unused=True)
    for a, b in zip(g_fast, g_naive):
        if a is None or b is None:
            assert a is None or not a.any()
            continue
        assert torch.allclose(a, b, rtol=1e-7, atol=1e-12)


def test_sade_finite_gradient_at_init_and_degenerate_cases():
    model = inject_adapters(tiny(), CLoRAConfig())
    loss = sade_loss(model)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert sade_loss(inject_adapters(tiny(), CLoRAConfig(num_bases=1))).item() == 0.0
    assert sade_loss(tiny()).item() == 0.0
    assert sade_loss(torch.nn.ReLU()).item() == 0.0  # no parameters at all: still a zero, on the CPU
    # one identical pair of bases (B_1 Q_1 A_1 == B_2 Q_2 A_2) has squared cosine 1
    m = inject_adapters(tiny(), CLoRAConfig(r=2, num_bases=2, target_modules=["blocks.0.mlp.fc1"]))
    bank = m.clora_banks["32x128"]
    with torch.no_grad():
        bank.A[2:] = bank.A[:2]
        bank.B.normal_()
        bank.B[:, 2:] = bank.B[:, :2]
    assert sade_loss(m).item() == pytest.approx(1.0, abs=1e-5)


def test_clora_layer_checks_its_bank_counts_flops_and_keys_banks_by_block():
    from torch import nn

    from pointclora.peft.clora import CLoRABank, bank_key

    bank = CLoRABank(8, 6, r=2, num_bases=3)
    assert bank.A.shape == (6, 8) and bank.B.shape == (6, 6) and not bank.B.any()
    assert bank.A.abs().max() <= 1 / 8**0.5
    with pytest.raises(ValueError, match=r"bank 'k' has shape in=8, out=6 but the layer's LRMs are in=8, out=4"):
        CLoRALinear(nn.Linear(8, 12), bank, "k", n_splits=3)
    layer = CLoRALinear(nn.Linear(8, 18), bank, "k", n_splits=3, scaling=0.5)
    assert torch.equal(layer.Q, torch.eye(2).expand(3, 3, 2, 2))  # identity at init
    # x Aᵀ once (p·r·in), then per split p·r² for Q and out·p·r for B
    assert layer.adapter_flops_per_token() == 6 * 8 + 3 * (3 * 4 + 6 * 6)
    assert "bank='k', r=2, p=3, in=8, out=6, n_splits=3, scaling=0.5" in repr(layer)
    assert bank_key("blocks.11.attn.qkv", 384, 384, "block") == "block11_384x384"
    assert bank_key("encoder.blocks.2.mlp.fc1", 384, 1536, "block") == "block2_384x1536"
    assert bank_key("blocks.11.attn.qkv", 384, 384, "shape") == "384x384"
    assert bank_key("myblocks.3.fc", 4, 5, "block") == "4x5"  # not a `blocks.<i>` path: one bank for the shape


def test_clora_forward_with_dropout_and_single_split_against_the_formula():
    from torch import nn

    from pointclora.peft.clora import CLoRABank

    torch.manual_seed(0)
    bank = CLoRABank(5, 4, r=2, num_bases=2)
    layer = CLoRALinear(nn.Linear(5, 4), bank, "k", n_splits=1, scaling=1.5, dropout=0.4).train()
    with torch.no_grad():
        bank.B.normal_()
        layer.Q.add_(torch.randn_like(layer.Q) * 0.5)
    x = torch.randn(3, 5)
    torch.manual_seed(3)
    got = layer(x)
    torch.manual_seed(3)
    xd = torch.nn.functional.dropout(x, 0.4, training=True)
    delta = sum(bank.B[:, 2 * h : 2 * h + 2] @ layer.Q[0, h] @ bank.A[2 * h : 2 * h + 2] for h in range(2))
    want = layer.base_layer(x) + 1.5 * xd @ delta.T
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(layer.delta_weight(), 1.5 * delta)


def test_method_hooks_weight_sade_keep_q_out_of_decay_and_unload_the_banks():
    from pointclora.peft import PeftConfigError
    from pointclora.peft.clora import CLoRAMethod

    model = randomize_adapters(inject_adapters(tiny(), CLoRAConfig(r=2, num_bases=3, sade_weight=0.3)))
    method = CLoRAMethod(model.peft_config)
    terms = method.auxiliary_losses(model)
    assert list(terms) == ["sade"] and terms["sade"].weight == 0.3 and type(terms["sade"].weight) is float
    torch.testing.assert_close(terms["sade"].value, sade_loss(model), rtol=0, atol=0)
    assert CLoRAMethod(CLoRAConfig(sade_weight=0.0)).auxiliary_losses(model) == {}
    q_names = {n for n, _ in model.named_parameters() if n.endswith(".Q")}
    assert len(q_names) == 8 and method.no_weight_decay(model) == q_names
    assert CLoRAMethod(CLoRAConfig(q_weight_decay=True)).no_weight_decay(model) == set()
    # one bank per shape group, keyed as the layers are; counts are the banks' own tensors
    assert method.shared_state(model) is model.clora_banks
    assert method.group_key(model.blocks[1].mlp.fc1) == "32x128"
    assert method.shared_parameter_counts(model) == {"32x32": 3 * 2 * 64, "32x128": 3 * 2 * 160, "128x32": 3 * 2 * 160}
    with pytest.raises(PeftConfigError, match="model already has an attribute 'clora_banks'"):
        method.create_shared_state(model, [])
    # a model without banks: no shared state, nothing to count
    plain = tiny()
    assert method.shared_state(plain) is None and method.shared_parameter_counts(plain) == {}
    merge_adapters(model)
    method.unload(model)
    assert not hasattr(model, "clora_banks") and type(model.blocks[0].attn.qkv) is torch.nn.Linear


def test_banks_and_q_take_the_base_dtype_and_a_merged_layer_costs_nothing():
    from pointclora.peft.clora import CLoRABank

    model = inject_adapters(tiny().double(), CLoRAConfig(r=2, num_bases=2))
    assert {t.dtype for t in model.clora_banks.parameters()} == {torch.float64}
    assert {layer.Q.dtype for layer in model.modules() if isinstance(layer, CLoRALinear)} == {torch.float64}
    layer = model.blocks[0].mlp.fc1
    flops = layer.adapter_flops_per_token()
    assert flops == 2 * 2 * 32 + (2 * 2 * 2 + 2 * 2 * 128)
    layer.merge()
    assert layer.adapter_flops_per_token() == 0
    assert repr(CLoRABank(8, 6, r=2, num_bases=3)) == "CLoRABank(in=8, out=6, r=2, p=3)"


def test_sade_near_b_zero_equals_naive_and_stays_a_squared_cosine():
    """The first steps of training: B grows from 0, so ⟨M_h, M_h⟩⟨M_k, M_k⟩ is far below the ε of the denominator;
    the Gram form must still equal the reference (ε added, not subtracted: the loss cannot turn negative)."""
    model = inject_adapters(tiny(), CLoRAConfig(r=2, num_bases=3)).double()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for bank in model.clora_banks.values():
            bank.B.copy_(torch.randn(bank.B.shape, generator=gen, dtype=torch.float64) * 1e-4)
    fast, naive = sade_loss(model), sade_loss_naive(model)
    assert 0.0 < naive.item() < 1e-3  # ε dominates: far from the unregularised squared cosines
    assert abs(fast.item() - naive.item()) <= 1e-9 * naive.item()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_bases=0), "num_bases must be an integer >= 1, got 0"),
        (dict(sade_weight=-0.1), "sade_weight must be >= 0.0, got -0.1"),
        (dict(sade_weight="x"), "sade_weight must be a number, got str 'x'"),
        (dict(share="layer"), "share must be 'shape' or 'block', got 'layer'"),
        (dict(q_weight_decay="no"), "q_weight_decay must be true or false, got 'no'"),
        (dict(q_fixed=1), "q_fixed must be true or false, got 1"),
    ],
)
def test_config_errors_name_the_key_whole(kwargs, message):
    from pointclora.peft import PeftConfigError

    with pytest.raises(PeftConfigError) as err:
        CLoRAConfig(**kwargs)
    assert str(err.value) == message  # the whole message: a key renamed inside it must show


def test_config_takes_a_whole_sade_weight_as_a_float():
    cfg = CLoRAConfig(sade_weight=1, num_bases=1, share="block")
    assert type(cfg.sade_weight) is float and cfg.sade_weight == 1.0 and (cfg.num_bases, cfg.share) == (1, "block")


def test_layer_defaults_one_split_no_scaling_no_dropout():
    from torch import nn

    from pointclora.peft.clora import CLoRABank

    bank = CLoRABank(8, 6, r=2, num_bases=3, dtype=torch.float64)
    layer = CLoRALinear(nn.Linear(8, 6).double(), bank, "k")
    assert (layer.n_splits, layer.scaling, type(layer.dropout)) == (1, 1.0, nn.Identity)
    assert layer.Q.dtype == torch.float64 and torch.equal(layer.Q, torch.eye(2, dtype=torch.float64).expand(1, 3, 2, 2))
