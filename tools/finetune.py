"""Thin shim: `python tools/finetune.py --help` (installed as `pointclora-finetune`)."""

from pointclora.cli.finetune import main

if __name__ == "__main__":
    raise SystemExit(main())
