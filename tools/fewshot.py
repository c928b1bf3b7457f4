"""Thin shim: `python tools/fewshot.py --help` (installed as `pointclora-fewshot`)."""

from pointclora.cli.fewshot import main

if __name__ == "__main__":
    raise SystemExit(main())
