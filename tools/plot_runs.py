"""Thin shim: `python tools/plot_runs.py --help` (installed as `pointclora-plot-runs`)."""

from pointclora.cli.plot_runs import main

if __name__ == "__main__":
    raise SystemExit(main())
