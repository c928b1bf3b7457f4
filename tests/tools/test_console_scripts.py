"""Every tool is a console command (setup.py) and a shim in tools/, both calling pointclora.cli.<tool>.main."""

import importlib
import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

TOOLS = ["finetune", "evaluate", "predict", "fewshot", "segment", "pretrain", "visualize", "count_params",
         "merge_adapter", "plot_runs", "probe", "export"]  # fmt: skip


def test_console_scripts_and_shims_point_at_cli_mains():
    entries = dict(re.findall(r'"(pointclora-[\w-]+)=([\w.]+:main)"', (REPO_ROOT / "setup.py").read_text()))
    for tool in TOOLS:
        assert entries.get(f"pointclora-{tool.replace('_', '-')}") == f"pointclora.cli.{tool}:main", tool
        assert callable(importlib.import_module(f"pointclora.cli.{tool}").main)
        shim = (REPO_ROOT / "tools" / f"{tool}.py").read_text()
        assert f"from pointclora.cli.{tool} import main" in shim, tool
