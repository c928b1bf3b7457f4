#!/usr/bin/env python
"""Shim: see pointclora.cli.merge_adapter."""
from pointclora.cli.merge_adapter import main

if __name__ == "__main__":
    raise SystemExit(main())
