#!/usr/bin/env python
"""Sample proxy mixtures (RegMix's sampler): the same as `regmix synthesize BASE.json --out DIR [...]`."""

import sys

from regmix_plugin.cli import main

if __name__ == "__main__":
    sys.exit(main(["synthesize", *sys.argv[1:]]))
