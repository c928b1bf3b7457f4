"""ShapeNetPart reader (pointclora/datasets/shapenetpart.py): the category file and JSON lists, which shapes each
split holds, the part table (given or scanned), the sampled values (the deterministic evaluation draw restated),
and every error's full message. Small files in the official layout (dataset_files.write_shapenetpart)."""

import json

import numpy as np
import pytest
import torch
from dataset_files import SNP_PARTS, raised, write_shapenetpart

from pointclora.datasets import DataFormatError, DatasetNotFoundError, ShapeNetPart
from pointclora.datasets.base import missing_dataset, pc_normalize
from pointclora.datasets.shapenetpart import LAYOUT, WHERE


def _rows(path) -> np.ndarray:
    return np.loadtxt(path).astype(np.float32)


def test_splits_hold_the_listed_shapes_in_list_order(tmp_path):
    lists = write_shapenetpart(tmp_path, with_missing_category=False)
    want = {s: [tmp_path / e.split("/")[1] / f"{e.split('/')[2]}.txt" for e in lists[s]] for s in lists}
    for split in ("train", "val", "test"):
        ds = ShapeNetPart(tmp_path, split, category_parts=SNP_PARTS)
        assert [p for _, p in ds.items] == want[split] and ds.source_files() == want[split]
        assert ds.sample_keys() == [str(p.resolve()) for p in want[split]]
    tv = ShapeNetPart(tmp_path, category_parts=SNP_PARTS)
    assert tv.split == "trainval" and [p for _, p in tv.items] == want["train"] + want["val"] and len(tv) == 12
    assert [c for c, _ in tv.items][:3] == ["Airplane"] * 3
    assert repr(tv) == (
        f"ShapeNetPart(root={str(tmp_path)!r}, split='trainval', samples=12, num_points=2048, "
        "categories=['Airplane', 'Bag', 'Cap'])"
    )


def test_categories_filter_keeps_the_index_of_the_full_file(tmp_path):
    write_shapenetpart(tmp_path, with_missing_category=False)
    ds = ShapeNetPart(tmp_path, "test", num_points=None, categories=["Cap"])
    assert len(ds) == 2 and ds.num_categories == 3 and ds.cat_to_idx == {"Airplane": 0, "Bag": 1, "Cap": 2}
    assert ds[1]["cls"] == 2 and set(ds[1]["seg"].tolist()) == {6, 7}
    assert raised(ValueError, lambda: ShapeNetPart(tmp_path, categories=["Cap", "Mug"])) == (
        "ShapeNetPart: unknown categories ['Mug']; synsetoffset2category.txt lists ['Airplane', 'Bag', 'Cap']"
    )


def test_sample_values_deterministic_random_and_full(tmp_path):
    write_shapenetpart(tmp_path, with_missing_category=False)
    te = ShapeNetPart(tmp_path, "test", num_points=50, use_normals=True, category_parts=SNP_PARTS, seed=3)
    path = te.items[2][1]
    rows = _rows(path)
    choice = np.random.default_rng([3, 2]).choice(len(rows), 50, replace=True)
    s = te[2]
    assert s["cls"] == 1 and s["seg"].dtype == torch.int64 and s["points"].shape == (50, 6)
    np.testing.assert_allclose(s["points"][:, :3].numpy(), pc_normalize(rows[:, :3])[choice], rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(s["points"][:, 3:].numpy(), rows[choice, 3:6])  # normals as stored
    assert s["seg"].tolist() == rows[choice, 6].astype(int).tolist()
    # val is drawn the same way; another seed draws other points
    val = ShapeNetPart(tmp_path, "val", num_points=50, category_parts=SNP_PARTS, seed=3)
    vrows = _rows(val.items[1][1])
    vchoice = np.random.default_rng([3, 1]).choice(len(vrows), 50, replace=True)
    assert val[1]["seg"].tolist() == vrows[vchoice, -1].astype(int).tolist()
    other = ShapeNetPart(tmp_path, "test", num_points=50, category_parts=SNP_PARTS, seed=4)[2]["seg"]
    assert other.tolist() != s["seg"].tolist()
    # training and eval_sampling="random" draw from torch's generator
    for split, kw in (("train", {}), ("test", {"eval_sampling": "random"})):
        ds = ShapeNetPart(tmp_path, split, num_points=50, category_parts=SNP_PARTS, **kw)
        r = _rows(ds.items[0][1])
        torch.manual_seed(7)
        want = torch.randint(len(r), (50,)).numpy()
        torch.manual_seed(7)
        assert ds[0]["seg"].tolist() == r[want, -1].astype(int).tolist()
    # no normalisation on request; every point with num_points=None
    raw = ShapeNetPart(tmp_path, "test", num_points=None, normalize=False, category_parts=SNP_PARTS)[2]
    np.testing.assert_array_equal(raw["points"].numpy(), rows[:, :3])
    assert raw["seg"].tolist() == rows[:, 6].astype(int).tolist()


def test_part_table_given_or_scanned_from_every_split(tmp_path):
    write_shapenetpart(tmp_path, with_missing_category=False)
    scanned = ShapeNetPart(tmp_path, "test", categories=["Bag"])
    assert scanned.category_parts == {"Airplane": [0, 1, 2, 3], "Bag": [4, 5], "Cap": [6, 7]}
    assert scanned.num_parts == 8
    # whole numbers, not floats: num_parts sizes the segmentation head (nn.Linear(..., 8.0) is refused)
    assert type(scanned.num_parts) is int and {type(i) for v in scanned.category_parts.values() for i in v} == {int}
    # a part seen only in a val file is still in the table of the test split
    val_file = tmp_path / "02954340" / "capval0.txt"
    rows = _rows(val_file)
    rows[0, -1] = 9
    np.savetxt(val_file, rows, fmt="%.6f")
    assert ShapeNetPart(tmp_path, "test").category_parts["Cap"] == [6, 7, 9]
    given = ShapeNetPart(tmp_path, "test", category_parts={"Airplane": [3, 0, 2, 1], "Bag": [5, 4], "Cap": [7, 6]})
    assert given.category_parts["Airplane"] == [0, 1, 2, 3] and given.num_parts == 8
    wide = ShapeNetPart(tmp_path, "test", category_parts={"Airplane": [0, 1, 2, 3], "Bag": [4, 5], "Cap": [6, 60]})
    assert wide.num_parts == 61
    got = raised(DataFormatError, lambda: ShapeNetPart(tmp_path, "test", category_parts={"Airplane": [0, 1]}))
    assert got == "ShapeNetPart: category_parts has no entry for category 'Bag' (has ['Airplane'])"
    got = raised(ValueError, lambda: ShapeNetPart(tmp_path, "test", category_parts={"Mug": [36]}))
    assert got == (
        "ShapeNetPart: category_parts names 'Mug', not in the category file (['Airplane', 'Bag', 'Cap']); for your "
        "own categories read the parts from the files: --set dataset.category_parts=null"
    )
    for ids in ([], [2, -1]):
        got = raised(ValueError, lambda: ShapeNetPart(tmp_path, "test", category_parts={**SNP_PARTS, "Bag": ids}))
        assert got == f"ShapeNetPart: category_parts['Bag'] must be non-negative part ids, got {ids}"


def test_part_labels_written_as_floats_are_rounded_within_1e_3(tmp_path):
    write_shapenetpart(tmp_path, with_missing_category=False)
    path = tmp_path / "02691156" / "airplanetest0.txt"
    rows = _rows(path)
    rows[:, -1] = np.where(np.arange(len(rows)) % 2 == 0, 2.0009, 0.9991)
    np.savetxt(path, rows, fmt="%.6f")
    ds = ShapeNetPart(tmp_path, "test", num_points=None, category_parts=SNP_PARTS)
    assert set(ds[0]["seg"].tolist()) == {1, 2}
    rows[:, -1] = np.where(np.arange(len(rows)) % 2 == 0, 0.001, 3.0)  # 0.001 is 1e-3 from 0: on the bound, kept
    np.savetxt(path, rows, fmt="%.6f")
    assert ds[0]["seg"].tolist() == np.where(np.arange(len(rows)) % 2 == 0, 0, 3).tolist()
    for bad in (2.0011, -1.0):
        rows[3, -1] = bad
        np.savetxt(path, rows, fmt="%.6f")
        assert raised(DataFormatError, lambda: ds[0]) == (
            f"{path}: part labels must be non-negative integers (last column)"
        )


def test_row_errors_in_full(tmp_path):
    write_shapenetpart(tmp_path, normals=False, with_missing_category=False)
    path = tmp_path / "02691156" / "airplanetest0.txt"
    nrm = ShapeNetPart(tmp_path, "test", use_normals=True, category_parts=SNP_PARTS)
    assert raised(DataFormatError, lambda: nrm[0]) == f"{path}: use_normals=True but rows have no normals (x y z part)"
    ds = ShapeNetPart(tmp_path, "test", category_parts=SNP_PARTS)
    assert ds[0]["points"].shape == (2048, 3)
    rows = _rows(path)
    rows[4, 1] = np.inf
    np.savetxt(path, rows, fmt="%.6f")
    assert raised(DataFormatError, lambda: ds[0]).startswith(f"{path}: 1 row(s) with NaN/Inf coordinates (first at "
                                                             "row 4, line 5)")  # fmt: skip
    np.savetxt(path, np.column_stack([np.ones((20, 3)), np.full(20, 5.0)]), fmt="%.6f")
    assert raised(DataFormatError, lambda: ds[0]) == (
        f"{path}: part label 5 out of range for category 'Airplane' (its parts are [0, 1, 2, 3])"
    )
    np.savetxt(path, np.column_stack([np.ones((4, 3)), [1.0, 9.0, 5.0, 9.0]]), fmt="%.6f")
    assert raised(DataFormatError, lambda: ds[0]) == (
        f"{path}: part label 9 out of range for category 'Airplane' (its parts are [0, 1, 2, 3])"
    )  # the first bad label of the file
    np.savetxt(path, np.ones((20, 6)), fmt="%.6f")
    assert raised(DataFormatError, lambda: ds[0]) == (
        f"{path}: rows hold 6 values, expected 7 (x y z nx ny nz part) or 4 (x y z part)"
    )


def test_metadata_errors_in_full(tmp_path):
    write_shapenetpart(tmp_path, with_missing_category=False)
    cat, split_dir = tmp_path / "synsetoffset2category.txt", tmp_path / "train_test_split"
    good = cat.read_text()
    cat.write_text("Airplane\t02691156\n\nBag 02773838 extra\n")
    assert raised(DataFormatError, lambda: ShapeNetPart(tmp_path)) == (
        f"{cat}: line 3 'Bag 02773838 extra': expected 'Category<TAB>synset'"
    )
    cat.write_text("\n\n")
    assert raised(DataFormatError, lambda: ShapeNetPart(tmp_path)) == f"{cat}: no categories"
    for text in ("A\t1\nB\t1\n", "A\t1\nA\t2\n"):
        cat.write_text(text)
        assert raised(DataFormatError, lambda: ShapeNetPart(tmp_path)) == f"{cat}: duplicate category name or synset"
    cat.write_text(good)
    lst = split_dir / "shuffled_val_file_list.json"
    lst.write_text("[1, 2")
    assert raised(DataFormatError, lambda: ShapeNetPart(tmp_path)).startswith(f"{lst}: not valid JSON (")
    lst.write_text(json.dumps(["shape_data/02691156/a", 3]))
    assert raised(DataFormatError, lambda: ShapeNetPart(tmp_path)) == (
        f"{lst}: expected a JSON list of 'shape_data/<synset>/<id>' strings"
    )
    lst.write_text(json.dumps(["shape_data/09999999/a"]))
    assert raised(DataFormatError, lambda: ShapeNetPart(tmp_path)) == (
        f"{lst}: entry 'shape_data/09999999/a' has synset 09999999 not in synsetoffset2category.txt"
    )
    lst.write_text(json.dumps(["shape_data/02691156/a/b"]))
    assert raised(DataFormatError, lambda: ShapeNetPart(tmp_path)) == (
        f"{lst}: entry 'shape_data/02691156/a/b' is not 'shape_data/<synset>/<id>'"
    )
    entries = ["shape_data/02691156/gone1", "shape_data/02773838/bagval0", "shape_data/02691156/gone2"]
    lst.write_text(json.dumps(entries))
    assert raised(DatasetNotFoundError, lambda: ShapeNetPart(tmp_path, "val")) == (
        f"ShapeNetPart: 2 of 3 shapes listed in the val split are missing, e.g. {tmp_path / '02691156' / 'gone1.txt'}, "
        f"{tmp_path / '02691156' / 'gone2.txt'} (layout:\n{LAYOUT})"
    )
    lst.write_text(json.dumps([f"shape_data/02691156/gone{i}" for i in range(1, 5)]))
    assert raised(DatasetNotFoundError, lambda: ShapeNetPart(tmp_path, "val")) == (
        "ShapeNetPart: 4 of 4 shapes listed in the val split are missing, e.g. "
        + ", ".join(str(tmp_path / "02691156" / f"gone{i}.txt") for i in (1, 2, 3))
        + f" (layout:\n{LAYOUT})"
    )
    lst.write_text("[]")
    assert raised(DatasetNotFoundError, lambda: ShapeNetPart(tmp_path, "val", categories=["Cap", "Bag"])) == str(
        missing_dataset("ShapeNetPart (val split, categories ['Bag', 'Cap'])", tmp_path,
                        [tmp_path / "02773838", tmp_path / "02954340"], WHERE, LAYOUT)  # fmt: skip
    )
    lst.unlink()
    assert raised(DatasetNotFoundError, lambda: ShapeNetPart(tmp_path)) == str(
        missing_dataset("ShapeNetPart", tmp_path, [lst], WHERE, LAYOUT)
    )


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"split": "all"}, "ShapeNetPart: split must be one of ['trainval', 'train', 'val', 'test'], got 'all'"),
        ({"up_axis": "-y"}, "ShapeNetPart: up_axis must be 'x', 'y' or 'z', got '-y'"),
        ({"eval_sampling": "fixed"}, "ShapeNetPart: eval_sampling must be 'deterministic' or 'random', got 'fixed'"),
        ({"num_points": 0}, "ShapeNetPart: num_points must be >= 1 or None, got 0"),
    ],
)
def test_bad_arguments_in_full(tmp_path, kwargs, message):
    assert raised(ValueError, lambda: ShapeNetPart(tmp_path, **kwargs)) == message


def test_up_axis_and_one_point(tmp_path):
    write_shapenetpart(tmp_path, with_missing_category=False)
    assert ShapeNetPart(tmp_path, "test").up_axis == "y"
    ds = ShapeNetPart(tmp_path, "test", up_axis="z", num_points=1)
    assert ds.up_axis == "z" and ds[0]["points"].shape == (1, 3)


def test_default_seed_transform_and_up_axis_x(tmp_path):
    write_shapenetpart(tmp_path, with_missing_category=False)

    def double(sample):
        return {**sample, "points": sample["points"] * 2}

    ds = ShapeNetPart(tmp_path, "test", num_points=30, category_parts=SNP_PARTS, transform=double, up_axis="x")
    rows = _rows(ds.items[1][1])
    choice = np.random.default_rng([0, 1]).choice(len(rows), 30, replace=True)
    s = ds[1]
    assert s["seg"].tolist() == rows[choice, -1].astype(int).tolist()
    np.testing.assert_allclose(s["points"].numpy(), 2 * pc_normalize(rows[:, :3])[choice], rtol=1e-6, atol=1e-6)
    assert ds.seed == 0 and ds.up_axis == "x"


def test_scan_of_the_part_table_skips_shapes_missing_from_other_splits(tmp_path):
    write_shapenetpart(tmp_path, with_missing_category=False)
    (tmp_path / "02691156" / "airplanetest1.txt").unlink()  # listed in test only
    ds = ShapeNetPart(tmp_path, "trainval")
    assert len(ds) == 12 and ds.category_parts == SNP_PARTS and ds.num_parts == 8
