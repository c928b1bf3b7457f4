"""Thin shim: `python tools/evaluate.py --help` (installed as `pointclora-evaluate`)."""

from pointclora.cli.evaluate import main

if __name__ == "__main__":
    raise SystemExit(main())
