#!/usr/bin/env bash
# Debian packages used by the tests and the demo: a real Slurm (slurm-wlm, munge) and real English text
# for the demo corpus. Idempotent; needs root and apt-get, and says so (exit 1) when they are missing.
set -euo pipefail
PKGS=(slurm-wlm munge
      dict-gcide wordnet-base fortunes fortunes-min dict-foldoc dict-jargon dict-devil
      sword-text-kjv sword-text-web python3-doc)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then echo "system packages: all present"; exit 0; fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "system packages: cannot install ${missing[*]} (need root and apt-get)" >&2; exit 1
fi
echo "system packages: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "system packages: done"
