#!/usr/bin/env python
"""Collect run directories (and RegMix/Olmix CSVs) into one runs table: `regmix collect RUN_DIR... --out T`."""

import sys

from regmix_plugin.cli import main

if __name__ == "__main__":
    sys.exit(main(["collect", *sys.argv[1:]]))
