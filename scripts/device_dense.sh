#!/usr/bin/env bash
# One call on a lent GPU machine (issue 20 §6; docs/training.md "A lent GPU"): continue
# the dense vision run of RECIPE from its committed compact state for SECONDS of wall time,
# measure the stage's throughput there, and write the new compact state, the training log
# and the benchmark to $OUT, which the device tool brings back.
#
# Prepared on this machine first (both git-ignored, named in the call's `carry`):
#   .whl/   wheels the GPU image lacks (voxel, nibabel, monocle-viewer; Python 3.12)
#   .data/  the three FreeSurfer files training reads, laid out as in their package
#           (read through $VOXELPROMPT_PACKAGE_DATA; never committed)
# Tested on the CPU with: OUT=/tmp/out RECIPE=dense-tiny DEVICE=cpu bash scripts/device_dense.sh 20
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_BUDGET=${1:-420}
RECIPE=${RECIPE:-dense-gpu}
DEVICE=${DEVICE:-cuda}
PYTHON=${PYTHON:-python3}
: "${OUT:?OUT must name the folder that comes back}"
if compgen -G '.whl/*.whl' >/dev/null && ! "$PYTHON" -c 'import voxel, nibabel' 2>/dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
[ -d .data ] && export VOXELPROMPT_PACKAGE_DATA="$PWD/.data"
run="runs/$RECIPE"
state="weights/train-state/$RECIPE-checkpoint.pt"
mkdir -p "$run"
if [ ! -f "$run/checkpoint.pt" ] && [ -f "$state" ]; then
    cp "$state" "$run/checkpoint.pt"   # a warm restart from the committed compact state
fi
"$PYTHON" -m vpcli train --recipe "$RECIPE" -o "$run" --device "$DEVICE" \
    --seconds "$SECONDS_BUDGET" 2>&1 | tee "$OUT/train.log"
cp "$run/train_log.jsonl" "$OUT/train_log.jsonl"
"$PYTHON" - "$run/checkpoint.pt" "$OUT/$RECIPE-checkpoint.pt" <<'PY'
import sys
from vpcli.vision.dense_training import DenseTrainer
trainer = DenseTrainer.resume(sys.argv[1])
trainer.save(sys.argv[2], compact=True)
print(f'compact state at step {trainer.step}: {sys.argv[2]}')
PY
"$PYTHON" benchmarks/dense_throughput.py --recipe "$RECIPE" --device "$DEVICE" --steps 20 \
    --json "$OUT/dense-throughput-$RECIPE-$DEVICE.json"
