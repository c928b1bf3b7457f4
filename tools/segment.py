"""Thin shim: `python tools/segment.py --help` (installed as `pointclora-segment`)."""

from pointclora.cli.segment import main

if __name__ == "__main__":
    raise SystemExit(main())
