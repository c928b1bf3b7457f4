#!/usr/bin/env python
"""Shim: see pointclora.cli.probe."""
from pointclora.cli.probe import main

if __name__ == "__main__":
    raise SystemExit(main())
