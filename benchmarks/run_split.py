"""Where a one-target ``voxelprompt run`` spends its time on a 1 mm T1 (the bundled MNI152
example), in fresh processes: importing torch and loading the scan; the vision work that
any one target needs (encode with the mirror pass, the softmax, intensity refinement);
importing the language model's library (transformers' LLaMA) and matplotlib (QC
pictures). ``--overlap`` also times each process with those two imports in a second
thread while the vision work runs, alternately with the plain order, to show what
overlapping them would gain.

    .venv/bin/python benchmarks/run_split.py [--weights weights] [--threads 2] [--repeats 2] [--overlap]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r'''
import sys, threading, time
started = time.perf_counter()
weights, scan_path, threads, overlap = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == '1'
import torch
torch.set_num_threads(threads)
sys.path.insert(0, sys.argv[5])
from vpcli.volumes import load_scans

def library_imports():
    import transformers.models.llama.modeling_llama  # noqa: F401
    import matplotlib.pyplot  # noqa: F401

worker = threading.Thread(target=library_imports, daemon=True) if overlap else None
if worker is not None:
    worker.start()
scans = load_scans([scan_path])
loaded = time.perf_counter()
from vpcli.vision.model import VisionNetwork
network = VisionNetwork.load(weights + '/vision.pt').eval()
with torch.no_grad():
    encoding = network.encode(scans)
    network.dense_probabilities(encoding)
    if network.refines():
        network.refined_labels(encoding)
seen = time.perf_counter()
if worker is not None:
    worker.join()
else:
    library_imports()
done = time.perf_counter()
print({"torch_and_scan": loaded - started, "vision": seen - loaded,
       "imports_after_vision": done - seen, "total": done - started})
'''


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--weights', default=str(ROOT / 'weights'))
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--repeats', type=int, default=2)
    parser.add_argument('--overlap', action='store_true')
    args = parser.parse_args()

    import ast
    sys.path.insert(0, str(ROOT))
    from vpcli.examples import write_example
    from vpcli.model_card import machine_description

    orders = ('plain', 'overlapped') if args.overlap else ('plain',)
    times: dict[str, list[dict]] = {order: [] for order in orders}
    with tempfile.TemporaryDirectory() as folder:
        scan = write_example(Path(folder))['T1w']
        for _ in range(args.repeats):
            for order in orders:
                out = subprocess.run([sys.executable, '-c', CHILD, args.weights, str(scan),
                                      str(args.threads), '1' if order == 'overlapped' else '0',
                                      str(ROOT)], capture_output=True, text=True, check=True)
                times[order].append(ast.literal_eval(out.stdout.strip().splitlines()[-1]))
    summary = {order: {key: {'median': round(statistics.median(t[key] for t in runs), 2),
                             'min': round(min(t[key] for t in runs), 2),
                             'max': round(max(t[key] for t in runs), 2)}
                       for key in runs[0]}
               for order, runs in times.items()}
    print(json.dumps({'threads': args.threads, 'repeats': args.repeats,
                      'machine': machine_description(), 'seconds': summary}, indent=2))


if __name__ == '__main__':
    main()
