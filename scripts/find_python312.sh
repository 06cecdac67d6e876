#!/usr/bin/env bash
# Print the path of a Python 3.12 interpreter: $PYTHON if set, then python3.12 on PATH, then pyenv's.
set -euo pipefail
ok() { "$1" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 12) else 1)' 2>/dev/null; }
for cand in "${PYTHON:-}" python3.12 python3; do
  [ -n "$cand" ] || continue
  p=$(command -v "$cand" 2>/dev/null) || continue
  if ok "$p"; then echo "$p"; exit 0; fi
done
root=$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")
for p in "$root"/versions/3.12*/bin/python3.12 /usr/local/bin/python3.12 /usr/bin/python3.12; do
  if [ -x "$p" ] && ok "$p"; then echo "$p"; exit 0; fi
done
echo "error: no Python 3.12 found (megatron-core 0.19 needs it); install one or set PYTHON=/path/to/python3.12" >&2
exit 1
