"""Issue #4 item 9: every kind of bad input gives a correct result or a clear error naming the file and problem."""

import gzip
import json
import os
import pickle

import numpy as np
import pytest
from dataset_files import (
    write_fewshot,
    write_h5,
    write_modelnet_h5,
    write_modelnet_txt,
    write_scanobjectnn,
    write_shapenet55,
    write_shapenetpart,
)

from pointclora.datasets import (
    DataFormatError,
    DatasetNotFoundError,
    ModelNet40,
    ModelNetFewShot,
    PointCloudFolder,
    ScanObjectNN,
    ShapeNet55,
    ShapeNetPart,
    UnsafePickleError,
    read_point_cloud,
)

SO = "main_split/training_objectdataset.h5"


def _so(t, **arrays):
    """ScanObjectNN OBJ_BG train file replaced by ``arrays``."""
    write_scanobjectnn(t)
    write_h5(t / SO, **arrays)
    return lambda: ScanObjectNN(t, "train", variant="OBJ_BG")


def _mn_txt(t, edit):
    write_modelnet_txt(t)
    p = t / "airplane" / "airplane_0001.txt"
    edit(p)
    return lambda: ModelNet40(t, "train", num_points=30)[0]


def _mn_cache(t, obj=None, raw=None):
    write_modelnet_txt(t)
    p = t / "modelnet40_train_8192pts_fps.dat"
    p.write_bytes(raw if raw is not None else pickle.dumps(obj))
    return lambda: ModelNet40(t, "train", source="fps_cache")


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/pointclora_pwned_marker",))


def _pcd(t, body: bytes, name="x.pcd"):
    (t / name).write_bytes(body)
    return lambda: read_point_cloud(t / name)


HDR = "VERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH {n}\nHEIGHT 1\nPOINTS {n}\nDATA {m}\n"


def _snp(t, rows, parts=None):
    write_shapenetpart(t)
    p = t / "02691156" / "airplanetest0.txt"
    np.savetxt(p, rows)
    return lambda: ShapeNetPart(t, "test", category_parts=parts)[0]


def _fs(t, mutate):
    ep, _ = write_fewshot(t)
    mutate(ep)
    (t / "5way2shot" / "0.pkl").write_bytes(pickle.dumps(ep))
    return lambda: ModelNetFewShot(t, 5, 2, 0, "train")


def _h5_truncate(t):
    f = _so(t, data=np.zeros((4, 48, 3), np.float32), label=np.zeros(4, np.int64))
    raw = (t / SO).read_bytes()
    (t / SO).write_bytes(raw[: len(raw) // 2])
    return f


def _folder_nan(t):
    (t / "a" / "train").mkdir(parents=True)
    arr = np.ones((10, 3))
    arr[4, 1] = np.inf
    np.save(t / "a" / "train" / "s.npy", arr)
    return lambda: PointCloudFolder(t, "train")[0]


CASES = [
    # -- missing data: where to get it + layout ------------------------------------------------------------------
    (
        "missing root modelnet",
        lambda t: lambda: ModelNet40(t / "none"),
        DatasetNotFoundError,
        r"ModelNet40 not found.*none[\s\S]*Get it from: modelnet40_normal_resampled.zip[\s\S]*modelnet40_train.txt",
    ),
    (
        "missing root scanobjectnn",
        lambda t: lambda: ScanObjectNN(t, "test", variant="OBJ_ONLY"),
        DatasetNotFoundError,
        r"main_split_nobg/test_objectdataset.h5[\s\S]*terms of use[\s\S]*Expected layout",
    ),
    (
        "missing root shapenetpart",
        lambda t: lambda: ShapeNetPart(t),
        DatasetNotFoundError,
        r"synsetoffset2category.txt[\s\S]*shuffled_train_file_list.json[\s\S]*Get it from",
    ),
    (
        "missing root shapenet55",
        lambda t: lambda: ShapeNet55(t),
        DatasetNotFoundError,
        r"ShapeNet-55/train.txt[\s\S]*shapenet_pc",
    ),
    (
        "missing fewshot episode",
        lambda t: lambda: ModelNetFewShot(t, 10, 20, 3),
        DatasetNotFoundError,
        r"10way20shot/3.pkl[\s\S]*generate_fewshot_episodes",
    ),
    (
        "missing fps cache",
        lambda t: (write_modelnet_txt(t), lambda: ModelNet40(t, "test", source="fps_cache"))[1],
        DatasetNotFoundError,
        r"modelnet40_test_8192pts_fps.dat[\s\S]*write_fps_cache",
    ),
    (
        "missing split list",
        lambda t: (write_modelnet_txt(t), (t / "modelnet40_test.txt").unlink(), lambda: ModelNet40(t, "test"))[2],
        DatasetNotFoundError,
        r"modelnet40_test.txt",
    ),
    (
        "missing listed file",
        lambda t: (write_modelnet_txt(t), (t / "xbox" / "xbox_0010.txt").unlink(), lambda: ModelNet40(t, "train"))[2],
        DatasetNotFoundError,
        r"1 of 8 shapes listed in .*modelnet40_train.txt are missing, e\.g\. .*xbox_0010.txt.*split_file",
    ),
    (
        "missing json split",
        lambda t: (
            write_shapenetpart(t),
            (t / "train_test_split" / "shuffled_val_file_list.json").unlink(),
            lambda: ShapeNetPart(t),
        )[2],
        DatasetNotFoundError,
        r"shuffled_val_file_list.json",
    ),
    (
        "missing h5 listed",
        lambda t: (
            write_modelnet_h5(t),
            (t / "ply_data_test1.h5").unlink(),
            lambda: ModelNet40(t, "test", source="h5"),
        )[2],
        DatasetNotFoundError,
        r"ply_data_test1.h5",
    ),
    (
        "folder split absent",
        lambda t: ((t / "a" / "train").mkdir(parents=True), lambda: PointCloudFolder(t, "test"))[1],
        DatasetNotFoundError,
        r"split 'test'[\s\S]*<class>/<split>/<file>",
    ),
    # -- corrupt / truncated containers --------------------------------------------------------------------------
    ("truncated h5", _h5_truncate, DataFormatError, r"training_objectdataset.h5: corrupt or truncated HDF5"),
    (
        "garbage h5",
        lambda t: (
            write_scanobjectnn(t),
            (t / SO).write_bytes(b"not hdf5" * 100),
            lambda: ScanObjectNN(t, variant="OBJ_BG"),
        )[2],
        DataFormatError,
        r"corrupt or truncated HDF5",
    ),
    (
        "truncated pickle",
        lambda t: _mn_cache(t, raw=pickle.dumps([[np.zeros((8192, 6), np.float32)], [1]])[:500]),
        DataFormatError,
        r"_fps.dat: corrupt or truncated pickle",
    ),
    (
        "crafted pickle",
        lambda t: _mn_cache(t, obj=[[_Evil()], [np.array([0], np.int32)]]),
        UnsafePickleError,
        r"_fps.dat: refusing to unpickle global '(posix|os)\.system'",
    ),
    (
        "cache wrong structure",
        lambda t: _mn_cache(t, obj={"points": []}),
        DataFormatError,
        r"expected a pickled \[list_of_points, list_of_labels\]",
    ),
    (
        "cache wrong dtype",
        lambda t: _mn_cache(t, obj=[[np.zeros((8192, 6), np.int64)], [np.array([0], np.int32)]]),
        DataFormatError,
        r"points\[0\] must be a float \(N, 6\) array, got ndarray \(8192, 6\) int64",
    ),
    (
        "truncated binary pcd",
        lambda t: _pcd(t, HDR.format(n=10, m="binary").encode() + b"\0" * 50),
        DataFormatError,
        r"x.pcd: truncated binary PCD: 50 bytes of data, 120 expected",
    ),
    (
        "truncated gzip",
        lambda t: _pcd(t, gzip.compress(HDR.format(n=2, m="ascii").encode() + b"1 2 3\n4 5 6\n")[:-12], "x.pcd.gz"),
        DataFormatError,
        r"x.pcd.gz: cannot read file",
    ),
    (
        "truncated off",
        lambda t: ((t / "m.off").write_text("OFF\n10 2 0\n0 0 0\n"), lambda: read_point_cloud(t / "m.off"))[1],
        DataFormatError,
        r"m.off: truncated OFF: header declares 10 vertices \+ 2 faces",
    ),
    (
        "off bad face index",
        lambda t: (
            (t / "m.off").write_text("OFF 3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 9\n"),
            lambda: read_point_cloud(t / "m.off"),
        )[1],
        DataFormatError,
        r"m.off: OFF face refers to vertex 9, mesh has 3 vertices",
    ),
    # -- wrong keys / shapes / dtypes -----------------------------------------------------------------------------
    (
        "h5 missing key",
        lambda t: _so(t, data=np.zeros((4, 48, 3), np.float32)),
        DataFormatError,
        r"training_objectdataset.h5: missing HDF5 dataset 'label' \(found keys: \['data'\]\)",
    ),
    (
        "h5 wrong shape",
        lambda t: _so(t, data=np.zeros((4, 48), np.float32), label=np.zeros(4, np.int64)),
        DataFormatError,
        r"'data' must be float \(n, 2048, 3\), got float32 \(4, 48\)",
    ),
    (
        "h5 wrong dtype",
        lambda t: _so(t, data=np.zeros((4, 48, 3), np.int32), label=np.zeros(4, np.int64)),
        DataFormatError,
        r"'data' must be float .*int32",
    ),
    (
        "h5 label length",
        lambda t: _so(t, data=np.zeros((4, 48, 3), np.float32), label=np.zeros(3, np.int64)),
        DataFormatError,
        r"'label' must be \(n,\) with n=4, got shape \(3,\)",
    ),
    (
        "h5 float labels",
        lambda t: _so(t, data=np.zeros((4, 48, 3), np.float32), label=np.array([0, 1.5, 2, 3])),
        DataFormatError,
        r"labels must be integers",
    ),
    (
        "npy object array",
        lambda t: (
            np.save(t / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True),
            lambda: read_point_cloud(t / "o.npy"),
        )[1],
        DataFormatError,
        r"o.npy: not a plain numeric .npy array",
    ),
    (
        "npy 1-d",
        lambda t: (np.save(t / "v.npy", np.zeros(9)), lambda: read_point_cloud(t / "v.npy"))[1],
        DataFormatError,
        r"v.npy: expected rows of at least 3 values",
    ),
    (
        "unsupported extension",
        lambda t: ((t / "a.stl").write_text("solid"), lambda: read_point_cloud(t / "a.stl"))[1],
        DataFormatError,
        r"a.stl: unsupported point-cloud extension '.stl'",
    ),
    (
        "shapenetpart 5 columns",
        lambda t: _snp(t, np.ones((20, 5))),
        DataFormatError,
        r"airplanetest0.txt: rows hold 5 values, expected 7 \(x y z nx ny nz part\) or 4",
    ),
    (
        "fewshot missing test",
        lambda t: _fs(t, lambda ep: ep.pop("test")),
        DataFormatError,
        r"0.pkl: expected a dict with keys 'train' and 'test', got \['train'\]",
    ),
    (
        "fewshot bad tuple",
        lambda t: _fs(t, lambda ep: ep["train"].__setitem__(1, (np.zeros((5, 3), np.float32), 0))),
        DataFormatError,
        r"0.pkl \['train'\]\[1\]: expected a \(points, new_label, original_label\) tuple",
    ),
    # -- non-finite, empty, too few points -----------------------------------------------------------------------
    (
        "nan in h5",
        lambda t: _so(t, data=np.full((2, 48, 3), np.nan, np.float32), label=np.zeros(2, np.int64)),
        DataFormatError,
        r"training_objectdataset.h5: 96 row\(s\) with NaN/Inf coordinates in 'data'",
    ),
    (
        "nan in text",
        lambda t: _mn_txt(t, lambda p: p.write_text(p.read_text().replace("\n", "\nnan,1,2,3,4,5\n", 1))),
        DataFormatError,
        r"airplane_0001.txt: 1 row\(s\) with NaN/Inf coordinates \(first at row 1, line 2\)",
    ),
    ("inf in npy", _folder_nan, DataFormatError, r"s.npy: 1 row\(s\) with NaN/Inf coordinates \(first at row 4\)"),
    (
        "empty text",
        lambda t: _mn_txt(t, lambda p: p.write_text("")),
        DataFormatError,
        r"airplane_0001.txt: empty point cloud",
    ),
    (
        "empty pcd",
        lambda t: _pcd(t, HDR.format(n=0, m="binary").encode()),
        DataFormatError,
        r"x.pcd: empty point cloud \(0 points\)",
    ),
    (
        "pcd count mismatch",
        lambda t: _pcd(t, HDR.format(n=3, m="ascii").encode() + b"1 2 3\n"),
        DataFormatError,
        r"x.pcd: PCD header declares 3 points, file holds 1",
    ),
    (
        "fewer points txt",
        lambda t: _mn_txt(t, lambda p: np.savetxt(p, np.ones((10, 6)), delimiter=",")),
        DataFormatError,
        r"airplane_0001.txt: 10 points, fewer than num_points=30",
    ),
    (
        "fewer points h5",
        lambda t: (write_modelnet_h5(t), lambda: ModelNet40(t, source="h5", num_points=2048))[1],
        DataFormatError,
        r"ply_data_train0.h5: clouds hold 32 points, fewer than num_points=2048",
    ),
    (
        "fewer points shapenet55",
        lambda t: (write_shapenet55(t), lambda: ShapeNet55(t, "test", num_points=1024)[0])[1],
        DataFormatError,
        r"test-?model0.npy: 64 points, fewer than num_points=1024",
    ),
    # -- labels out of range -------------------------------------------------------------------------------------
    (
        "scanobjectnn label 15",
        lambda t: _so(t, data=np.zeros((2, 48, 3), np.float32), label=np.array([3, 15])),
        DataFormatError,
        r"training_objectdataset.h5 \('label'\): label 15 \(sample 1\) out of range: .* 15 classes",
    ),
    (
        "h5 label vs shape_names",
        lambda t: (
            write_modelnet_h5(t),
            (t / "shape_names.txt").write_text("a\nb\n"),
            lambda: ModelNet40(t, source="h5"),
        )[2],
        DataFormatError,
        r"ply_data_train0.h5 \('label'\): label \d \(sample \d+\) out of range: .*shape_names.txt define 2 classes",
    ),
    (
        "negative label",
        lambda t: _so(t, data=np.zeros((2, 48, 3), np.float32), label=np.array([-1, 0])),
        DataFormatError,
        r"label -1 \(sample 0\) out of range",
    ),
    (
        "fewshot label >= way",
        lambda t: _fs(t, lambda ep: ep["train"].__setitem__(0, (ep["train"][0][0], 7, ep["train"][0][2]))),
        DataFormatError,
        r"\['train'\]\[0\]: new_label 7 out of range for a 5-way episode",
    ),
    (
        "part id outside category",
        lambda t: _snp(
            t,
            np.column_stack([np.ones((20, 6)), np.full(20, 9.0)]),
            {"Airplane": [0, 1, 2, 3], "Bag": [4, 5], "Cap": [6, 7]},
        ),
        DataFormatError,
        r"airplanetest0.txt: part label 9 out of range for category 'Airplane' \(its parts are \[0, 1, 2, 3\]\)",
    ),
    (
        "fractional part id",
        lambda t: _snp(t, np.column_stack([np.ones((20, 6)), np.full(20, 1.5)])),
        DataFormatError,
        r"airplanetest0.txt: part labels must be non-negative integers",
    ),
    (
        "class from id unknown",
        lambda t: _mn_txt(t, lambda p: (p.parent.parent / "modelnet40_train.txt").write_text("zebra_0001\n")),
        DataFormatError,
        r"modelnet40_train.txt: id 'zebra_0001' names class 'zebra', which is not in modelnet40_shape_names.txt",
    ),
    # -- malformed rows ------------------------------------------------------------------------------------------
    (
        "text row short",
        lambda t: _mn_txt(t, lambda p: p.write_text(p.read_text() + "1,2,3\n")),
        DataFormatError,
        r"airplane_0001.txt: line 41: 3 values, the first data row has 6 \('1,2,3'\)",
    ),
    (
        "text row not numeric",
        lambda t: _mn_txt(t, lambda p: p.write_text("a,b,c,d,e,f\n" + p.read_text())),
        DataFormatError,
        r"airplane_0001.txt: line 1, column 1: 'a' is not a number",
    ),
    (
        "pcd ascii row",
        lambda t: _pcd(t, HDR.format(n=2, m="ascii").encode() + b"1 2 3\n4 x 6\n"),
        DataFormatError,
        r"x.pcd: malformed PCD ascii row",
    ),
    (
        "json not list",
        lambda t: (
            write_shapenetpart(t),
            (t / "train_test_split" / "shuffled_test_file_list.json").write_text('{"a": 1}'),
            lambda: ShapeNetPart(t, "test"),
        )[2],
        DataFormatError,
        r"shuffled_test_file_list.json: expected a JSON list",
    ),
    (
        "json bad entry",
        lambda t: (
            write_shapenetpart(t),
            (t / "train_test_split" / "shuffled_test_file_list.json").write_text(json.dumps(["x"])),
            lambda: ShapeNetPart(t, "test"),
        )[2],
        DataFormatError,
        r"entry 'x' is not 'shape_data/<synset>/<id>'",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(tmp_path, case):
    _, setup, exc, pattern = case
    call = setup(tmp_path)
    with pytest.raises(exc, match=pattern) as info:
        call()
    # never a bare library exception: ours carry the file or root in the message
    assert str(tmp_path) in str(info.value) or "pkl" in str(info.value)


def test_broken_off_header_parses_to_the_same_cloud_as_a_fixed_one(tmp_path):
    body = "0 0 0\n1 0 0\n0 1 0\n0 0 1\n3 0 1 2\n3 0 1 3\n3 0 2 3\n3 1 2 3\n"
    (tmp_path / "broken.off").write_text("OFF4 4 0\n" + body)
    (tmp_path / "good.off").write_text("OFF\n4 4 0\n" + body)
    a, b = read_point_cloud(tmp_path / "broken.off", 256), read_point_cloud(tmp_path / "good.off", 256)
    assert a.shape == (256, 6)
    np.testing.assert_array_equal(a, b)


def test_fewer_points_than_requested_in_transforms_is_padded_not_an_error():
    import torch

    from pointclora.datasets import eval_transforms, train_transforms

    s = {"points": torch.randn(5, 3), "label": 0}
    assert train_transforms(16)(s)["points"].shape == (16, 3)
    assert eval_transforms(16)(s)["points"].shape == (16, 3)


def test_crafted_pickle_in_fewshot_episode_runs_nothing(tmp_path):
    marker = "/tmp/pointclora_pwned_marker"
    if os.path.exists(marker):
        os.remove(marker)
    d = tmp_path / "5way10shot"
    d.mkdir()
    (d / "0.pkl").write_bytes(pickle.dumps({"train": [(_Evil(), 0, np.int32(1))], "test": []}))
    with pytest.raises(UnsafePickleError, match="0.pkl"):
        ModelNetFewShot(tmp_path, 5, 10, 0)
    assert not os.path.exists(marker)
