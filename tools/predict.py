"""Thin shim: `python tools/predict.py --help` (installed as `pointclora-predict`)."""

from pointclora.cli.predict import main

if __name__ == "__main__":
    raise SystemExit(main())
