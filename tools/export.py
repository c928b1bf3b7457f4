#!/usr/bin/env python
"""Shim: see pointclora.cli.export."""
from pointclora.cli.export import main

if __name__ == "__main__":
    raise SystemExit(main())
