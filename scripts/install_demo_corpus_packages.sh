#!/usr/bin/env bash
# `make demo` runs this first; sources that still are missing are skipped by the corpus builder with a message.
"$(dirname "$0")/install_system_packages.sh" || echo "demo: could not install Debian text packages; missing sources will be skipped"
