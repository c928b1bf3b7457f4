"""Our peer PEFT methods against their official code: logits on real clouds (fp32 and fp64) and trainable counts.

    python bench/peers_parity.py --official /work/scratch/peers --shims /work/shared/tools/official_cpu_shims \
        [--methods idpt dapt] [--clouds 4] [--npoints 2048] [--markdown]

``--official`` holds each official repository unpacked at its pinned commit in a folder named ``owner+name``
(e.g. ``zyh16143998882+ICCV23-IDPT``); ``--shims`` the CPU stand-ins of their CUDA extensions (``pointnet2_ops``,
``knn_cuda``, ``chamfer``, a timm facade; put a folder with ``easydict``/``termcolor`` stand-ins there or on
``PYTHONPATH`` if those are not installed). No official code is part of this project: the script imports it from
those folders. It needs no GPU.

For each method: build the official model (its ScanObjectNN PB_T50_RS config: 15 classes, 128 groups of 32 points),
give every tensor (weights, zero-initialised adapters, BatchNorm statistics) random non-trivial values, copy them into
ours by name (every key must map, both ways), and compare the logits of both in eval mode on real ModelNet40 clouds
(first ``--npoints`` points of each file, unit sphere) in float32 and float64. Our backbone uses
``skip_near_origin=True``, the FPS semantics of pointnet2_ops' kernel that the official code runs. The trainable count
applies the official repository's own filter (names containing its keywords) to the official model, and ours counts
``requires_grad`` after ``inject_adapters``.
"""

from __future__ import annotations

import argparse
import gzip
import importlib
import json
import math
import os
import re
import subprocess
import sys
import types
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np
import torch

#: Official model-config fields of each method (PB_T50_RS config of each repository) and how to map names.
SPECS: Dict[str, Dict[str, Any]] = {
    "idpt": {
        "repo": "zyh16143998882+ICCV23-IDPT",
        "commit": "bf152f2",
        "module": "models.Point_MAE",
        "class": "PointTransformer",
        "config": dict(trans_dim=384, depth=12, drop_path_rate=0.1, cls_dim=15, num_heads=6, group_size=32,
                       num_group=128, encoder_dims=384, prompt_layer=11, prompt_module="dgcnn", cls_type="all"),
        "ours": {},
        # official name -> ours
        # DGCNNView registers each BatchNorm twice (bn1 and conv1.1): the alias is dropped (None)
        "rename": [(r"^blocks\.cls\.bn\d\.", None), (r"^blocks\.blocks\.", "blocks."),
                   (r"^blocks\.cls\.", "extensions.idpt.prompt_module."),
                   (r"^prompt_pos$", "extensions.idpt.prompt_pos")],
        "trainable": ("cls",),  # optimizer.part: only_new
        "paper_trainable": "1.7 M",
    },
    "dapt": {
        "repo": "LMD0311+DAPT",
        "commit": "41aa0bc",
        "module": "models.DAPT",
        "class": "PointTransformer_DAPT",
        "config": dict(trans_dim=384, depth=12, drop_path_rate=0.3, drop_rate=0.0, cls_dim=15, num_heads=6,
                       group_size=32, num_group=128, encoder_dims=384, drop_adapter_rate=0.2, rank=64,
                       class_token="use", prompt_token="mean", patch_token="max"),
        "ours": {"rank": 64, "drop_adapter_rate": 0.2},
        "rename": [(r"^blocks\.blocks\.(\d+)\.Adapter_MLP\.", r"blocks.\1.extensions.dapt.adapter."),
                   (r"^blocks\.blocks\.(\d+)\.attn\.tfts_(gamma|beta)_1$", r"blocks.\1.extensions.dapt.ssf.qkv_\2"),
                   (r"^blocks\.blocks\.(\d+)\.attn\.tfts_(gamma|beta)_2$", r"blocks.\1.extensions.dapt.ssf.proj_\2"),
                   (r"^blocks\.blocks\.(\d+)\.mlp\.tfts_(gamma|beta)_1$", r"blocks.\1.extensions.dapt.ssf.fc1_\2"),
                   (r"^blocks\.blocks\.(\d+)\.mlp\.tfts_(gamma|beta)_2$", r"blocks.\1.extensions.dapt.ssf.fc2_\2"),
                   (r"^blocks\.blocks\.(\d+)\.tfts_(gamma|beta)_1$", r"blocks.\1.extensions.dapt.ssf.norm1_\2"),
                   (r"^blocks\.blocks\.(\d+)\.tfts_(gamma|beta)_2$", r"blocks.\1.extensions.dapt.ssf.norm2_\2"),
                   (r"^blocks\.blocks\.(\d+)\.tfts_(gamma|beta)_3$", r"blocks.\1.extensions.dapt.ssf.prompt_\2"),
                   (r"^blocks\.blocks\.", "blocks."),
                   (r"^tfts_(gamma|beta)_1$", r"extensions.dapt.ssf.encoder_\1"),
                   (r"^tfts_(gamma|beta)_2$", r"extensions.dapt.ssf.norm_\1")],
        "trainable": ("cls", "tfts", "Adapter"),
        "paper_trainable": "1.1 M",
    },
    "ppt": {
        "repo": "zsc000722+PPT",
        "commit": "8f87fb8",
        "module": "models.PPT",
        "class": "PointTransformer",
        "config": dict(embed_dim=384, depth=12, drop_path_rate=0.3, cls_dim=15, num_heads=6, group_size=32,
                       num_group=128, prompt_group_size=32, prompt_num_group=128, type="pos"),
        "ours": {},
        "rename": [(r"^blocks\.(prompt_mlp|prompt_pos_mlp|prompt_all_mlp)\.", r"extensions.ppt.\1."),
                   (r"^blocks\.blocks\.", "blocks.")],
        "trainable": ("cls", "prompt", "first_conv", "pos_embed"),  # runner_finetune.py, type: pos
        "paper_trainable": "1.04 M",
    },
    "pointlora": {
        "repo": "songw-zju+PointLoRA",
        "commit": "82719f0",
        "module": "models.PointLoRA",
        "class": "PointTransformer_PointLoRA",
        "config": dict(trans_dim=384, depth=12, drop_path_rate=0.3, cls_dim=15, num_heads=6, group_size=32,
                       num_group=128, encoder_dims=384),
        "ours": {},
        # the runner wraps qkv / proj after building the model (inject_pointlora2pt(blocks, LoRALinear, gamma=8,
        # lora_alpha=8)); its module imports torchvision, which cannot load here, so the wrapping is redone below
        "inject": ("utils.lora", "LoRALinear"),
        "rename": [(r"^blocks\.blocks\.(\d+)\.attn\.(qkv|proj)\.linear\.", r"blocks.\1.attn.\2.base_layer."),
                   (r"^blocks\.blocks\.(\d+)\.attn\.(qkv|proj)\.weight$", r"blocks.\1.attn.\2.prompt_weight"),
                   (r"^blocks\.(prompt_\w+)\.", r"extensions.pointlora.\1."),
                   (r"^lora_mask_predictor\.", "extensions.pointlora.lora_mask_predictor."),
                   (r"^blocks\.blocks\.", "blocks.")],
        "trainable": ("cls", "prompt", "first_conv", "pos_embed", "lora_"),  # builder.py, part: pointlora
        "paper_trainable": "0.77 M",
    },
    "pointgst": {
        "repo": "jerryfeng2003+PointGST",
        "commit": "7fbe92f",
        "module": "models.PointTransformer",
        "class": "PointTransformer_PGST",
        "config": dict(trans_dim=384, depth=12, drop_path_rate=0.1, cls_dim=15, num_heads=6, group_size=32,
                       num_group=128, encoder_dims=384, rank=36, local=32, tsne=False),
        "ours": {},
        "rename": [(r"^blocks\.blocks\.(\d+)\.gft_adapter\.", r"blocks.\1.extensions.pointgst."),
                   (r"^blocks\.blocks\.", "blocks.")],
        "trainable": ("adapt", "cls"),  # builder.py, part: adapt
        "paper_trainable": "0.6 M",
    },
    "gaprompt": {
        "repo": "zhoujiahuan1991+ICML2025-GAPrompt",
        "commit": "8a26a2e",
        "module": "models.prompt_MAE",
        "class": "PointTransformer_pointtokenprompt",
        "config": dict(trans_dim=384, depth=12, drop_path_rate=0.1, if_half=False, cls_dim=15, num_heads=6,
                       group_size=32, num_group=128, encoder_dims=384,
                       adapter_config=dict(adapter_dim=16, adapter_drop_path_rate=0.1), point_number=5, scale=0.01,
                       factor=5, perturbation=0.8, point_prompt=True, shift_net=True, prompt_depth=6, scaler=False,
                       num_tokens=10, propagation_type="permutation_after_attention"),
        "ours": {},
        # scaler1 / scaler2 are used only with scaler: True (no published config): dropped
        "rename": [(r"^blocks\.blocks\.\d+\.scaler[12]$", None),
                   (r"^(shift_net|shape_feature_mlp|point_prompt|prompt_cor)", r"extensions.gaprompt.\1"),
                   (r"^blocks\.blocks\.(\d+)\.(prompt_embeddings|adapter|out_transform)",
                    r"blocks.\1.extensions.gaprompt.\2"),
                   (r"^blocks\.blocks\.", "blocks.")],
        "trainable": ("point_prompt", "shift_net", "shape_feature_mlp", "adapter", "cls_pos", "cls_token", "cls_head_",
                      "prompt_embeddings", "prompt_cor", "out_transform"),  # runner_module.py
        "paper_trainable": "0.6 M",
    },
}
# GAPrompt's OBJ_BG config propagates before attention (and uses 10 prompt points, perturbation 0.2)
SPECS["gaprompt_objbg"] = dict(SPECS["gaprompt"], method="gaprompt",
                               config=dict(SPECS["gaprompt"]["config"], point_number=10, perturbation=0.2,
                                           propagation_type="permutation_before_attention"),
                               ours={"point_number": 10, "perturbation": 0.2,
                                     "propagation_type": "permutation_before_attention"})  # fmt: skip

_OFFICIAL_TOP = ("models", "utils", "extensions", "datasets", "tools")


class _CpuTorch(types.ModuleType):
    """``torch`` for an official module that hard-codes ``torch.device('cuda')`` (IDPT's ``get_graph_feature`` puts
    an index offset there): the same module with ``device`` answering the CPU. Placement only; no arithmetic."""

    def __init__(self) -> None:
        super().__init__("torch")

    def __getattr__(self, name: str) -> Any:
        if name == "device":
            return lambda *a, **k: torch.device("cpu")
        return getattr(torch, name)


def import_official(root: Path, spec: Dict[str, Any]) -> Any:
    """Import the official model class from ``root/spec['repo']`` (purging another repository's packages first)."""
    repo = str(root / spec["repo"])
    for name in list(sys.modules):
        if name.split(".")[0] in _OFFICIAL_TOP:
            del sys.modules[name]
    sys.path.insert(0, repo)
    try:
        module = importlib.import_module(spec["module"])
        if "models.dgcnn" in sys.modules:  # IDPT
            sys.modules["models.dgcnn"].torch = _CpuTorch()
        cls = getattr(module, spec["class"])
        if "inject" not in spec:
            return cls
        layer_module, layer_cls = spec["inject"]
        layer = getattr(importlib.import_module(layer_module), layer_cls)

        def build(config):  # the official model as its runner prepares it: every block's qkv and proj wrapped
            model = cls(config)
            for block in model.blocks.blocks:
                block.attn.qkv = layer(8, 8, block.attn.qkv)
                block.attn.proj = layer(8, 8, block.attn.proj)
            return model

        return build
    finally:
        sys.path.remove(repo)


def real_clouds(data_root: Path, count: int, npoints: int) -> torch.Tensor:
    """``(count, npoints, 3)`` float64: the first points of real ModelNet40 shapes (sorted paths), unit sphere."""
    files = sorted((data_root / "modelnet40_normal_resampled").glob("*/*.txt.gz"))[:: 37][:count]
    clouds = []
    for f in files:
        with gzip.open(f, "rt") as fh:
            xyz = np.loadtxt(fh, delimiter=",", usecols=(0, 1, 2), max_rows=npoints)
        xyz = xyz - xyz.mean(0)
        xyz = xyz / np.linalg.norm(xyz, axis=1).max()
        clouds.append(torch.from_numpy(xyz))
    return torch.stack(clouds)


def randomize_(state: Dict[str, torch.Tensor], seed: int) -> Dict[str, torch.Tensor]:
    """Non-trivial values for every float tensor (zero-initialised adapters too): the comparison exercises them."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, t in state.items():
        if not t.is_floating_point():
            out[name] = t
            continue
        r = torch.randn(t.shape, generator=gen, dtype=torch.float64)
        if name.endswith("running_var"):
            v = 0.5 + torch.rand(t.shape, generator=gen, dtype=torch.float64)
        elif t.dim() >= 2:
            v = r / math.sqrt(max(1, t[0].numel()))
        elif re.search(r"(weight|gamma[^.]*)$", name):
            v = 1 + 0.1 * r
        else:
            v = 0.1 * r
        out[name] = v.to(t.dtype)
    return out


def rename(state: Dict[str, torch.Tensor], rules: List[Tuple[str, str]]) -> Dict[str, torch.Tensor]:
    out = {}
    for name, t in state.items():
        new = name
        for pattern, repl in rules:
            if re.search(pattern, new):
                new = None if repl is None else re.sub(pattern, repl, new)
                break
        if new is not None:
            out[new] = t
    return out


def build_ours(spec: Dict[str, Any]) -> torch.nn.Module:
    from pointclora.models import create_model
    from pointclora.peft import inject_adapters, make_peft_config

    cfg = spec["config"]
    model = create_model("point_mae_s", num_classes=cfg["cls_dim"], num_groups=cfg["num_group"],
                         skip_near_origin=True)  # fmt: skip
    return inject_adapters(model, make_peft_config(spec["method"], **spec["ours"]))


def compare(method: str, official_root: Path, data_root: Path, clouds: int, npoints: int) -> Dict[str, Any]:
    from easydict import EasyDict

    from pointclora.models.flops import count_gflops

    spec = dict(SPECS[method])
    spec.setdefault("method", method)
    official_cls = import_official(official_root, spec)
    torch.manual_seed(0)
    official = official_cls(EasyDict(spec["config"]))
    ours = build_ours(spec)
    state = randomize_(official.state_dict(), seed=1)
    official.load_state_dict(state)
    mapped = rename(official.state_dict(), spec["rename"])  # after loading: aliased tensors agree
    ours_keys = set(ours.state_dict())
    missing, unexpected = sorted(ours_keys - set(mapped)), sorted(set(mapped) - ours_keys)
    if missing or unexpected:
        raise SystemExit(f"{method}: state does not map: ours missing {missing[:8]}, unexpected {unexpected[:8]}")
    ours.load_state_dict(mapped)
    official_trainable = sum(p.numel() for n, p in official.named_parameters()
                             if any(k in n for k in spec["trainable"]))  # fmt: skip
    ours_trainable = sum(p.numel() for p in ours.parameters() if p.requires_grad)
    pts = real_clouds(data_root, clouds, npoints)
    row: Dict[str, Any] = {"method": method, "commit": spec["commit"], "official_trainable": official_trainable,
                           "ours_trainable": ours_trainable, "paper_trainable": spec["paper_trainable"]}  # fmt: skip
    official.eval()
    ours.eval()
    with torch.no_grad():
        for dtype, key in ((torch.float32, "fp32"), (torch.float64, "fp64")):
            official.to(dtype)
            ours.to(dtype)
            try:
                a = official(pts.to(dtype))
            except RuntimeError as err:  # GAPrompt's ShiftNet casts xyz to float32: no float64 run exists
                row[f"max_abs_{key}"] = f"official fails: {str(err).splitlines()[0]}"
                continue
            b = ours(pts.to(dtype))
            if isinstance(a, tuple):  # PointLoRA: (logits, mask_loss)
                aux = getattr(ours.extensions, spec["method"]).mask_loss
                row[f"aux_abs_{key}"] = float((a[1] - aux).abs())
                a = a[0]
            row[f"max_abs_{key}"] = float((a - b).abs().max())
            row[f"logit_scale_{key}"] = float(a.abs().max())
        ours.float()
        row["gflops_2048"] = count_gflops(ours, 2048)
    return row


def main(argv: List[str] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--official", type=Path, required=True, help="folder with the official repositories")
    p.add_argument("--shims", type=Path, required=True, help="official_cpu_shims folder")
    p.add_argument("--data", type=Path, default=Path(os.environ.get("POINTCLORA_REAL_DATA", "../shared/data")))
    p.add_argument("--methods", nargs="+", default=list(SPECS), choices=list(SPECS))
    p.add_argument("--clouds", type=int, default=4)
    p.add_argument("--npoints", type=int, default=2048)
    p.add_argument("--markdown", action="store_true", help="print the docs/PEERS.md table")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    sys.path.insert(0, str(args.shims))
    if args.one:  # child: one method in a clean interpreter (the official repositories share package names)
        print(json.dumps(compare(args.methods[0], args.official, args.data, args.clouds, args.npoints)))
        return 0
    rows = []
    for m in args.methods:
        cmd = [sys.executable, os.path.abspath(__file__), "--one", "--methods", m, "--official", str(args.official),
               "--shims", str(args.shims), "--data", str(args.data), "--clouds", str(args.clouds),
               "--npoints", str(args.npoints)]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise SystemExit(f"{m} failed:\n{out.stderr[-3000:]}")
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    if args.markdown:
        print(f"{args.clouds} real clouds x {args.npoints} points; max |difference| of the logits, of the mask loss:\n")
        print("| method | official commit | fp32 | fp64 | logit scale | aux loss fp32 / fp64 | trainable official | "
              "ours | paper | GFLOPs (2048 pts, ours) |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            fp64 = r["max_abs_fp64"] if isinstance(r["max_abs_fp64"], str) else f"{r['max_abs_fp64']:.1e}"
            aux = f"{r['aux_abs_fp32']:.1e} / {r['aux_abs_fp64']:.1e}" if "aux_abs_fp32" in r else "-"
            print(f"| {r['method']} | {r['commit']} | {r['max_abs_fp32']:.1e} | {fp64} | "
                  f"{r['logit_scale_fp32']:.2f} | {aux} | {r['official_trainable']:,} | {r['ours_trainable']:,} | "
                  f"{r['paper_trainable']} | {r['gflops_2048']:.2f} |")
    else:
        for r in rows:
            print(r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
