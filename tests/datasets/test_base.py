"""The dataset base: normalisation, label and split checks, sample conversion, indexing and repr."""

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from pointclora.datasets.base import (
    ClassificationDataset,
    check_labels,
    check_split,
    content_keys,
    missing_dataset,
    pc_normalize,
    to_sample,
)


def test_pc_normalize_centres_on_the_centroid_and_scales_by_the_largest_radius():
    xyz = np.array([[1.0, 1, 1], [3, 1, 1], [1, 5, 1], [3, 5, 9]])  # centroid (2, 3, 3), not the bbox centre
    out = pc_normalize(xyz)
    centred = xyz - np.array([2.0, 3, 3])
    np.testing.assert_allclose(out, centred / np.linalg.norm(centred, axis=1).max())
    assert np.linalg.norm(out, axis=1).max() == pytest.approx(1.0)
    same = np.ones((4, 3))
    np.testing.assert_array_equal(pc_normalize(same), np.zeros((4, 3)))  # radius 0: centred, not divided
    small = np.array([[0.1, 0, 0], [-0.1, 0, 0], [0, 0.05, 0], [0, -0.05, 0]])  # radius 0.1 < 1: scaled up too
    np.testing.assert_allclose(pc_normalize(small), small / 0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy's "mean of empty slice"
        assert pc_normalize(np.zeros((0, 3))).shape == (0, 3)  # an empty cloud stays empty, no error


def test_check_labels_accepts_integral_values_and_names_the_first_bad_one():
    np.testing.assert_array_equal(check_labels(np.array([0.0, 2.0, 1.0]), 3, "f.h5"), [0, 2, 1])
    assert check_labels(np.array([0, 2]), 3, "f.h5").dtype == np.int64
    with pytest.raises(ValueError, match=r"f.h5: label 3 \(sample 1\) out of range: class names define 3 classes "
                                         r"\(valid ids 0..2\)"):  # fmt: skip
        check_labels(np.array([2, 3, -1]), 3, "f.h5")
    with pytest.raises(ValueError, match=r"label -1 \(sample 0\).*shape names define 2"):
        check_labels(np.array([-1, 0]), 2, "g", names_source="shape names")
    with pytest.raises(ValueError, match="labels must be integers"):
        check_labels(np.array([0.5, 1.0]), 3, "f.h5")
    with pytest.raises(ValueError, match="labels must be integers"):
        check_labels(np.array([np.nan]), 3, "f.h5")
    assert check_labels(np.array([], dtype=np.float32), 3, "f.h5").shape == (0,)


def test_check_split_and_missing_dataset_message():
    assert check_split("test", ["train", "test"], "ModelNet40") == "test"
    with pytest.raises(ValueError, match=r"ModelNet40: split must be one of \['train', 'test'\], got 'val'"):
        check_split("val", ["train", "test"], "ModelNet40")
    err = missing_dataset("ModelNet40", "/data/mn", [f"f{i}" for i in range(7)], "https://x", "root/\n  a.txt\n")
    text = str(err)
    assert "ModelNet40 not found under root='/data/mn'" in text and "f4" in text and "f5" not in text
    assert "... and 2 more" in text and "Get it from: https://x" in text and text.count("a.txt") == 1
    assert "... and" not in str(missing_dataset("X", "r", ["a"], "w", "l"))


def test_to_sample_types():
    s = to_sample(np.arange(6, dtype=np.float64).reshape(2, 3), label=np.int32(4), seg=np.array([1, 2], np.int8),
                  name="a")  # fmt: skip
    assert s["points"].dtype == torch.float32 and s["points"].tolist() == [[0, 1, 2], [3, 4, 5]]
    assert s["label"] == 4 and type(s["label"]) is int
    assert s["seg"].dtype == torch.int64 and s["seg"].tolist() == [1, 2] and s["name"] == "a"


class _Three(ClassificationDataset):
    def __init__(self, transform=None):
        super().__init__("/some/root", "train", transform)
        self.classes = ["a", "b"]
        self.labels = np.array([0, 1, 1])

    def get(self, index):
        return {"points": torch.full((2, 3), float(index)), "label": int(self.labels[index])}

    def extra_repr(self):
        return "classes=2"


def test_indexing_negative_and_out_of_range_transform_and_repr():
    ds = _Three()
    assert len(ds) == 3 and ds.num_classes == 2 and ds.class_to_idx == {"a": 0, "b": 1}
    assert ds[-1]["points"][0, 0] == 2.0 and ds[0]["points"][0, 0] == 0.0 and ds[2]["label"] == 1
    for bad in (3, -4):
        with pytest.raises(IndexError, match=rf"_Three: index {bad if bad > 0 else -1} out of range for 3 samples"):
            ds[bad]
    doubled = _Three(transform=lambda s: {**s, "points": s["points"] * 2})
    assert doubled[1]["points"][0, 0] == 2.0
    assert repr(ds) == "_Three(root='/some/root', split='train', samples=3, classes=2)"


def test_content_keys_are_the_sha1_of_the_contiguous_bytes():
    import hashlib

    a = np.arange(12, dtype=np.float32).reshape(4, 3)
    keys = content_keys([a, a.copy(), a[:, ::-1], a + 1])
    assert keys[0] == "content:" + hashlib.sha1(a.tobytes()).hexdigest()
    assert keys[0] == keys[1] and len(set(keys)) == 3  # same points, same key; a strided view is hashed as laid out
    assert keys[2] == "content:" + hashlib.sha1(np.ascontiguousarray(a[:, ::-1]).tobytes()).hexdigest()
    assert content_keys([]) == []


def test_base_defaults_and_edge_sizes():
    class Plain(ClassificationDataset):
        def __init__(self):
            super().__init__(None, None)
            self.classes, self.labels = ["only"], np.zeros(0, np.int64)

    ds = Plain()
    assert ds.root is None and ds.split is None and ds.transform is None
    assert ds.sample_keys() is None and ds.source_files() == [] and ds.extra_repr() == ""
    assert repr(ds) == "Plain(root='None', split=None, samples=0)"
    with pytest.raises(IndexError, match=r"^Plain: index -1 out of range for 0 samples$"):
        ds[-1]
    assert isinstance(_Three().root, Path) and str(_Three().root) == "/some/root"
    # five missing entries are all shown, with no "... and" line; the sixth is summarised
    five = str(missing_dataset("D", "r", [f"m{i}" for i in range(5)], "w", "layout\n"))
    assert "m4" in five and "... and" not in five
    assert str(missing_dataset("D", Path("/r"), ["a", "b"], "https://w", "root/\n  a\n\n")) == (
        "D not found under root='/r'. Missing:\n  a\n  b\nGet it from: https://w\nExpected layout:\nroot/\n  a\n"
        "Point the dataset config's `root` at that folder (see datasets/README.md)."
    )
    six = str(missing_dataset("D", "r", [f"m{i}" for i in range(6)], "w", "l"))
    assert "m4\n  ... and 1 more\nGet it from" in six


def test_check_labels_bounds_and_dtypes():
    np.testing.assert_array_equal(check_labels(np.array([0, 2], np.uint8), 3, "f"), [0, 2])
    assert check_labels(np.array([True, False]), 2, "f").dtype == np.int64
    with pytest.raises(ValueError, match=r"^f: label 2 \(sample 0\) out of range: class names define 2 classes "
                                         r"\(valid ids 0\.\.1\)$"):  # fmt: skip
        check_labels(np.array([2.0, 0.0]), 2, "f")
    with pytest.raises(ValueError, match=r"^f: labels must be integers, got dtype float64 with non-integer values$"):
        check_labels(np.array([1.0, np.inf]), 3, "f")
    assert check_labels([1, 0], 2, "f").tolist() == [1, 0]  # a list is accepted
