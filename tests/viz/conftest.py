import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # viz_helpers.py beside the tests

pytest.importorskip("matplotlib")
pytest.importorskip("PIL")


def _open3d_ok() -> bool:
    try:
        from pointclora.viz.render import _probe_open3d
    except ImportError:
        return False
    return _probe_open3d()[0]


@pytest.fixture(scope="session")
def open3d_works():
    return _open3d_ok()


@pytest.fixture(params=["matplotlib", "open3d"])
def backend(request, open3d_works):
    """Both renderers; Open3D is skipped (with the probe's reason) where its offscreen renderer cannot start."""
    if request.param == "open3d" and not open3d_works:
        from pointclora.viz.render import _probe_open3d

        pytest.skip(f"Open3D offscreen rendering unavailable here: {_probe_open3d()[1]}")
    return request.param
