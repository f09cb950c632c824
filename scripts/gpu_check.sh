#!/usr/bin/env bash
# Every CUDA path of tokunify on tiny models, in one command (<= 5 minutes on one GPU).
# One line per path (ok / skip / FAILED) and a summary; exit 1 if any path failed.
# Without CUDA it says so and exits 0. Options: --keep DIR (keep models and the log), --only PATH...
# Python: $PYTHON, else the repository's .venv, else python3.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${PYTHON:-}"
if [[ -z "$py" ]]; then
  if [[ -x "$root/.venv/bin/python" ]]; then py="$root/.venv/bin/python"; else py=python3; fi
fi
export HF_HUB_OFFLINE=1 PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
exec "$py" "$root/scripts/gpu_check.py" "$@"
