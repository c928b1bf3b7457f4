"""A --ckpt that is not a torch.save file is described as what it is, not as 'pickled Python objects'."""

import collections

import pytest
import torch

from pointclora.models.checkpoint import CheckpointError, safe_torch_load


class _Custom:
    pass


@pytest.mark.parametrize(
    "content, expected",
    [
        (
            b"version https://git-lfs.github.com/spec/v1\n",
            r"is not a PyTorch checkpoint: it is a text file \(starts with 'version https:/",
        ),
        (b"", r"is not a PyTorch checkpoint: it is an empty file \(0 bytes\)"),
        (b"<!DOCTYPE html><html><body>Sign in</body></html>", r"it is an HTML page"),
        (b"\x89HDF\r\n\x1a\n" + bytes(8), r"it is an HDF5 file"),
        (bytes(range(200, 240)), r"binary data of an unknown format \(first bytes c8 c9 ca"),
    ],
    ids=["text", "empty", "html", "hdf5", "binary"],
)
def test_non_torch_files_are_named_for_what_they_are(tmp_path, content, expected):
    p = tmp_path / "pretrain.pth"
    p.write_bytes(content)
    with pytest.raises(CheckpointError, match=expected) as info:
        safe_torch_load(p)
    assert "pickled Python objects" not in str(info.value)


def test_truncated_checkpoint_and_real_pickled_objects(tmp_path):
    good = tmp_path / "good.pth"
    torch.save({"model": {"w": torch.ones(3)}}, good)
    assert torch.equal(safe_torch_load(good)["model"]["w"], torch.ones(3))
    (tmp_path / "cut.pth").write_bytes(good.read_bytes()[:120])
    with pytest.raises(CheckpointError, match=r"cut.pth: .*truncated or corrupt") as info:
        safe_torch_load(tmp_path / "cut.pth")
    assert "pickled Python objects" not in str(info.value)
    torch.save({"model": {"w": torch.ones(3)}, "extra": _Custom()}, tmp_path / "obj.pth")
    with pytest.raises(CheckpointError, match=r"contains pickled Python objects .*Unsupported global.*_Custom"):
        safe_torch_load(tmp_path / "obj.pth")
    torch.save({"counts": collections.OrderedDict(a=torch.zeros(1))}, tmp_path / "plain.pth")
    assert "counts" in safe_torch_load(tmp_path / "plain.pth")
