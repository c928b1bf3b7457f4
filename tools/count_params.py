#!/usr/bin/env python
"""Shim: see pointclora.cli.count_params."""
from pointclora.cli.count_params import main

if __name__ == "__main__":
    raise SystemExit(main())
