"""Thin shim: `python tools/pretrain.py --help` (installed as `pointclora-pretrain`)."""

from pointclora.cli.pretrain import main

if __name__ == "__main__":
    raise SystemExit(main())
