"""Thin shim: `python tools/visualize.py --help` (installed as `pointclora-visualize`)."""

from pointclora.cli.visualize import main

if __name__ == "__main__":
    raise SystemExit(main())
