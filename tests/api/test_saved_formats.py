"""Saved weights across versions: the folder format is versioned; a folder of a newer format is refused with a
message naming its version (never half-read), and the manifest names no class of ours (the task and method by name)."""

from __future__ import annotations

import json

import pytest

from pointclora.api import WeightsError, load_weights
from pointclora.engine.weights import FORMAT_VERSION, MANIFEST, read_manifest


def _folder(tmp_path, **manifest):
    folder = tmp_path / "best"
    folder.mkdir()
    base = {"format": "pointclora-weights", "format_version": 1, "pointclora_version": "0.1.0",
            "task": "classification", "method": "clora"}  # fmt: skip
    (folder / MANIFEST).write_text(json.dumps({**base, **manifest}))
    return folder


def test_current_version_is_read(tmp_path):
    assert read_manifest(_folder(tmp_path))["format_version"] == 1 == FORMAT_VERSION


@pytest.mark.parametrize("version", [FORMAT_VERSION + 1, 0, "1", None])
def test_other_versions_are_refused_naming_them(tmp_path, version):
    folder = _folder(tmp_path, format_version=version, pointclora_version="9.0.0")
    with pytest.raises(WeightsError, match=rf"format_version {version!r} is not one this pointclora .* reads "
                                           rf"\(1\.\.{FORMAT_VERSION}\).*\(9\.0\.0\)"):  # fmt: skip
        load_weights(folder)


def test_a_task_that_is_not_registered_is_named(tmp_path):
    folder = _folder(tmp_path, task="toy_task_from_a_plugin", meta={}, config={}, backbone={})
    with pytest.raises(KeyError, match="unknown task 'toy_task_from_a_plugin'"):
        load_weights(folder)
