#!/usr/bin/env bash
# Set up voxelprompt in a virtual environment and run the main job on the bundled real
# example scan (the MNI ICBM152 2009c T1w template shipped inside nilearn).
# torch is installed first and pinned: on these machines torch==2.13.0 is the CPU wheel,
# while an unpinned torch would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e .
export PATH="$PWD/.venv/bin:$PATH"

voxelprompt example example/ >/dev/null
T1W=example/sub-mni152/anat/sub-mni152_T1w.nii.gz

# the main job: the shipped model writes a program for the prompt, the sandbox runs it with
# the vision network; masks, metrics.json, script.py, QC pictures and report.html in out/
voxelprompt run --prompt "what is the volume of the white matter?" "$T1W" -o out/quickstart --overwrite
echo "outputs: $(ls out/quickstart | tr '\n' ' ')" >&2
