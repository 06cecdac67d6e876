#!/usr/bin/env bash
# Warn, before a fresh install, when the disk holding the venv has less room than the install takes.
# The venv is about 7 GB (PyPI's torch for Linux is a CUDA build: ~4 GB of nvidia-* libraries, plus DALI),
# and pip needs room for the wheels while it unpacks them. Without this, a full disk shows up only as
# pip's "[Errno 28] No space left on device" deep in the install log.
set -uo pipefail
venv=${1:?usage: check_disk.sh VENV_DIR}
need_gb=${REGMIX_INSTALL_GB:-9}
[ -d "$venv/lib/python3.12/site-packages/torch" ] && exit 0  # already installed: an upgrade needs little
dir=$(dirname "$(realpath -m "$venv")")
while [ ! -d "$dir" ]; do dir=$(dirname "$dir"); done  # the nearest folder that exists is on the same disk
avail_kb=$(df --output=avail -k "$dir" 2>/dev/null | tail -n 1 | tr -d ' ')
[ -n "$avail_kb" ] || exit 0
if [ "$avail_kb" -lt $((need_gb * 1024 * 1024)) ]; then
  echo "warning: only $((avail_kb / 1024 / 1024)) GB free under $dir; installing into $venv takes about $need_gb GB (torch's CUDA libraries, DALI); free some space or set VENV=/path/on/a/larger/disk" >&2
fi
exit 0
