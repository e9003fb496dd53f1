"""Wall time of a one-target ``voxelprompt run`` on a 1 mm T1 (the bundled MNI152 example,
197 x 233 x 189 voxels), model load included, as a user runs it (issue 20: 20 s or less on
2 CPU cores with the default weights).

Each repeat starts ``voxelprompt run`` as a new process and times it from start to exit.
With ``--no-flip`` the same weights run without test-time flip averaging (a temporary copy
whose vision config has ``flip_averaging = false``), to show what it costs.

    .venv/bin/python benchmarks/run_timing.py [--weights weights] [--threads 2] [--repeats 3] [--no-flip]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def without_flip(weights: Path, folder: Path) -> Path:
    """A copy of a weights folder whose dense vision network does not flip-average."""
    import torch

    from vpcli.weights import sha256_file
    copy = folder / 'weights'
    shutil.copytree(weights, copy, ignore=shutil.ignore_patterns('train-state'))
    data = torch.load(copy / 'vision.pt', weights_only=True)
    data['config']['flip_averaging'] = False
    torch.save(data, copy / 'vision.pt')
    manifest = json.loads((copy / 'manifest.json').read_text())
    for entry in manifest['files']:
        if entry['role'] == 'vision':
            entry['sha256'] = sha256_file(copy / 'vision.pt')
            entry['bytes'] = (copy / 'vision.pt').stat().st_size
    (copy / 'manifest.json').write_text(json.dumps(manifest, indent=2))
    return copy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--weights', type=Path, default=Path('weights'))
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--prompt', default='what is the volume of the left hippocampus?')
    parser.add_argument('--no-flip', action='store_true')
    args = parser.parse_args()

    from vpcli.examples import write_example
    from vpcli.model_card import machine_description

    voxelprompt = shutil.which('voxelprompt', path=str(Path(sys.executable).parent)) or 'voxelprompt'
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        scan = write_example(folder / 'example')['T1w']
        weights = without_flip(args.weights, folder) if args.no_flip else args.weights
        seconds = []
        for repeat in range(args.repeats):
            started = time.perf_counter()
            completed = subprocess.run(
                [voxelprompt, 'run', '--prompt', args.prompt, str(scan), '-o', str(folder / 'out'),
                 '--overwrite', '--threads', str(args.threads), '--weights', str(weights), '--json'],
                capture_output=True, text=True)
            seconds.append(time.perf_counter() - started)
            if completed.returncode != 0:
                raise SystemExit(f'voxelprompt run failed: {completed.stderr.strip().splitlines()[-1]}')
        metrics = json.loads(completed.stdout)
    print(json.dumps({'prompt': args.prompt, 'threads': args.threads, 'flip_averaging': not args.no_flip,
                      'repeats': args.repeats, 'machine': machine_description(),
                      'wall_seconds': {'median': round(statistics.median(seconds), 2),
                                       'min': round(min(seconds), 2), 'max': round(max(seconds), 2)},
                      'answer_values': {o['name']: o['value'] for o in metrics.get('outputs', [])}},
                     indent=2))


if __name__ == '__main__':
    main()
