#!/usr/bin/env bash
# Create .venv in the repository and install autoseg with its test tools (idempotent).
# torch is installed first: on a CPU-only machine `torch==2.13.0` resolves to a local
# CPU wheel. On a CUDA machine, install the CUDA build of torch you need into .venv
# before running this script, and it is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
python -c "import torch" 2>/dev/null || python -m pip install --quiet torch==2.13.0
python -m pip install --quiet -e ".[test]"
echo "autoseg installed in $(pwd)/.venv"
