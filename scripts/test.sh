#!/usr/bin/env bash
# Set up a virtual environment and run the whole test suite (what CI runs).
# torch is installed first and pinned: on these machines torch==2.13.0 is the CPU wheel,
# while an unpinned torch would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e '.[test,train]'
exec .venv/bin/python -m pytest "$@"
