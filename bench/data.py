"""Data-loading throughput of every loader with the training transforms, against a point_mae_s training step.

    OMP_NUM_THREADS=1 .venv/bin/python bench/data.py [--batches 6] [--workers 2] [--real-data ../shared/data]

For each loader: samples/s over ``--batches`` batches of 32 (after one warm-up batch) from a DataLoader with 2
workers and ``train_transforms`` (reference protocol: FPS to point_all when the cloud is larger, random subset,
scale-and-translate). Real files from ``../shared/data`` are used where they exist; the other formats are generated in
a temporary folder in their official layout. The last column is loader time per batch / one training step of
point_mae_s (forward + backward + AdamW, batch 32, 1024 points, this machine): below 1 means loading keeps up with
training even without overlap.
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pointclora import datasets as D  # noqa: E402
from pointclora.datasets.transforms import train_transforms  # noqa: E402


def _h5(path, **arrays):
    import h5py

    with h5py.File(path, "w") as f:
        for k, v in arrays.items():
            f.create_dataset(k, data=v)


def make_generated(tmp: Path, n: int = 256):
    """Official-format files for the datasets without real copies here."""
    rng = np.random.default_rng(0)
    # ScanObjectNN PB_T50_RS: (n, 2048, 3)
    so = tmp / "ScanObjectNN" / "main_split"
    so.mkdir(parents=True)
    _h5(
        so / "training_objectdataset_augmentedrot_scale75.h5",
        data=rng.normal(size=(n, 2048, 3)).astype(np.float32),
        label=rng.integers(0, 15, n),
    )
    # ModelNet40 h5 release
    mh = tmp / "modelnet40_ply_hdf5_2048"
    mh.mkdir()
    (mh / "shape_names.txt").write_text("\n".join(f"c{i}" for i in range(40)))
    _h5(
        mh / "ply_data_train0.h5",
        data=rng.normal(size=(n, 2048, 3)).astype(np.float32),
        label=rng.integers(0, 40, (n, 1)).astype(np.uint8),
    )
    (mh / "train_files.txt").write_text("data/modelnet40_ply_hdf5_2048/ply_data_train0.h5\n")
    # ModelNet40 FPS cache: [list of (8192, 6) float32, list of (1,) int32]
    mc = tmp / "modelnet40_cache"
    mc.mkdir()
    (mc / "modelnet40_shape_names.txt").write_text("\n".join(f"c{i}" for i in range(40)))
    with open(mc / "modelnet40_train_8192pts_fps.dat", "wb") as f:
        pickle.dump(
            [
                [rng.normal(size=(8192, 6)).astype(np.float32) for _ in range(n)],
                [np.array([i % 40], np.int32) for i in range(n)],
            ],
            f,
        )
    # few-shot episode 10-way 20-shot
    fs = tmp / "fewshot" / "10way20shot"
    fs.mkdir(parents=True)
    ep = {
        "train": [(rng.normal(size=(8192, 6)).astype(np.float32), i % 10, np.int32(i % 10)) for i in range(200)],
        "test": [(rng.normal(size=(8192, 6)).astype(np.float32), i % 10, np.int32(i % 10)) for i in range(20)],
    }
    with open(fs / "0.pkl", "wb") as f:
        pickle.dump(ep, f)
    # ShapeNet-55: (8192, 3) npy
    sn = tmp / "ShapeNet55-34"
    (sn / "ShapeNet-55").mkdir(parents=True)
    (sn / "shapenet_pc").mkdir()
    names = [f"02691156-m{i}.npy" for i in range(n)]
    for nm in names:
        np.save(sn / "shapenet_pc" / nm, rng.normal(size=(8192, 3)).astype(np.float32))
    (sn / "ShapeNet-55" / "train.txt").write_text("\n".join(names))
    return {"so": tmp / "ScanObjectNN", "mh": mh, "mc": mc, "fs": tmp / "fewshot", "sn": sn}


def loaders(real: Path, gen: dict):
    """(name, source, dataset factory taking a transform, num_points)"""
    out = []
    mn = real / "modelnet40_normal_resampled"
    if mn.is_dir():
        out.append(
            (
                "ModelNet40 txt (8192 of 10k rows)",
                "real",
                # first_rows: this row measures text parsing; the default FPS order is computed once and cached
                lambda t: D.ModelNet40(mn, "train", train_split_file="present_train.txt", transform=t,
                                       sampling="first_rows"),  # fmt: skip
                1024,
            )
        )
    out += [
        (
            "ModelNet40 fps_cache",
            "generated",
            lambda t: D.ModelNet40(gen["mc"], "train", source="fps_cache", transform=t),
            1024,
        ),
        ("ModelNet40 h5", "generated", lambda t: D.ModelNet40(gen["mh"], "train", source="h5", transform=t), 1024),
        ("ModelNetFewShot 10w20s", "generated", lambda t: D.ModelNetFewShot(gen["fs"], 10, 20, 0, transform=t), 1024),
        ("ScanObjectNN PB_T50_RS", "generated", lambda t: D.ScanObjectNN(gen["so"], "train", transform=t), 2048),
        ("ShapeNet55 (1024 of 8192)", "generated", lambda t: D.ShapeNet55(gen["sn"], "train", transform=t), 1024),
    ]
    cattle = real / "cattle_parts" / "shapenetcore_partanno_segmentation_benchmark_v0_normal"
    if cattle.is_dir():
        out.append(
            ("ShapeNetPart-layout cattle", "real", lambda t: D.ShapeNetPart(cattle, "trainval", transform=t), 2048)
        )
    m10 = real / "modelnet10_pcd"
    if m10.is_dir():
        out.append(
            ("PointCloudFolder ModelNet10 PCD", "real", lambda t: D.PointCloudFolder(m10, "train", transform=t), 1024)
        )
    rg = real / "rgbd_partial"
    if rg.is_dir():
        out.append(
            ("PointCloudFolder RGB-D ascii PCD", "real", lambda t: D.PointCloudFolder(rg, None, transform=t), 1024)
        )
    out += [
        ("Synthetic", "generated on the fly", lambda t: D.Synthetic(num_samples=512, transform=t), 1024),
        ("SyntheticParts", "generated on the fly", lambda t: D.SyntheticParts(num_samples=512, transform=t), 1024),
    ]
    return out


def time_loader(ds, batches: int, workers: int, bs: int = 32) -> float:
    dl = DataLoader(
        ds,
        batch_size=bs,
        shuffle=True,
        num_workers=workers,
        worker_init_fn=D.seed_worker,
        generator=torch.Generator().manual_seed(0),
        persistent_workers=False,
        drop_last=True,
    )
    it = iter(dl)
    next(it)  # warm-up: worker start, file caches
    t0 = time.perf_counter()
    n = 0
    for _ in range(batches):
        try:
            b = next(it)
        except StopIteration:
            break
        n += b["points"].shape[0]
    return n / (time.perf_counter() - t0)


def time_step(steps: int = 3, bs: int = 32, npts: int = 1024) -> float:
    from pointclora.models import create_model

    torch.manual_seed(0)
    model = create_model("point_mae_s", num_classes=40)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.05)
    x, y = torch.randn(bs, npts, 3), torch.randint(0, 40, (bs,))
    times = []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return float(np.median(times[1:]))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=int, default=6)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3, help="timed training steps of point_mae_s")
    ap.add_argument("--real-data", default=os.environ.get("POINTCLORA_REAL_DATA", str(REPO.parent / "shared" / "data")))
    ap.add_argument("--no-fps", action="store_true", help="train transforms without the FPS-to-point_all step")
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    print(
        f"torch {torch.__version__}, {os.cpu_count()} CPUs, threads {torch.get_num_threads()}, "
        f"workers {args.workers}, batch 32"
    )
    step = time_step(args.steps)
    print(f"point_mae_s training step (batch 32, 1024 pts, fwd+bwd+AdamW): {step:.2f} s = {32 / step:.1f} samples/s\n")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        gen = make_generated(Path(tmp))
        for name, src, make, npts in loaders(Path(args.real_data), gen):
            ds = make(train_transforms(npts, "scale_translate", fps_first=not args.no_fps))
            sps = time_loader(ds, args.batches, args.workers)
            rows.append((name, src, npts, sps, (32 / sps) / step))
            print(f"  {name:34s} {sps:9.1f} samples/s", flush=True)
    print(f"\n{'loader':34s} {'data':22s} {'npts':>5s} {'samples/s':>10s} {'load/step':>10s}")
    for name, src, npts, sps, ratio in rows:
        print(f"{name:34s} {src:22s} {npts:5d} {sps:10.1f} {ratio:10.3f}")
    print(
        "\nload/step = seconds to load a batch of 32 on the workers / seconds of one point_mae_s step; < 1: loading "
        "is not the bottleneck."
    )


if __name__ == "__main__":
    main()
