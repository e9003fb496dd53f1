"""Wall time of a one-target ``voxelprompt run`` on a 1 mm T1 (the bundled MNI152 example,
197 x 233 x 189 voxels), model load included, as a user runs it (issue 20: 20 s or less on
2 CPU cores with the default weights).

Each repeat starts ``voxelprompt run`` as a new process and times it from start to exit.
With ``--without KEY`` (``flip_averaging``, ``intensity_refinement``, ``edge_refinement``;
repeatable; ``--no-flip`` is ``--without flip_averaging``) the same weights run with that
run-time feature off (a temporary copy whose vision config sets it false), to show what it costs;
``--paired`` times the weights as they are and that copy alternately, in one run, and
prints the ratio of their medians. ``--against DIR`` times another weights folder
alternately with ``--weights`` instead (say, the shipped weights against a new export).

    .venv/bin/python benchmarks/run_timing.py [--weights weights] [--threads 2] [--repeats 3]
        [--without intensity_refinement [--paired] | --against OTHER_WEIGHTS]
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


def without(weights: Path, folder: Path, keys: list[str]) -> Path:
    """A copy of a weights folder whose dense vision network has the run-time ``keys`` off."""
    import torch

    from vpcli.weights import sha256_file
    copy = folder / 'weights'
    shutil.copytree(weights, copy, ignore=shutil.ignore_patterns('train-state'))
    data = torch.load(copy / 'vision.pt', weights_only=True)
    for key in keys:
        data['config'][key] = False
    torch.save(data, copy / 'vision.pt')
    manifest = json.loads((copy / 'manifest.json').read_text())
    for entry in manifest['files']:
        if entry['role'] == 'vision':
            entry['sha256'] = sha256_file(copy / 'vision.pt')
            entry['bytes'] = (copy / 'vision.pt').stat().st_size
    (copy / 'manifest.json').write_text(json.dumps(manifest, indent=2))
    return copy


def main() -> None:
    from vpcli.vision.config import RUN_TIME_KEYS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--weights', type=Path, default=Path('weights'))
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--prompt', default='what is the volume of the left hippocampus?')
    parser.add_argument('--no-flip', action='store_true', help='--without flip_averaging')
    parser.add_argument('--without', action='append', default=[],
                        choices=list(RUN_TIME_KEYS))
    parser.add_argument('--paired', action='store_true',
                        help='also time the weights as they are, alternately, and print the ratio')
    parser.add_argument('--against', type=Path,
                        help='another weights folder, timed alternately with --weights')
    args = parser.parse_args()
    keys = sorted(set(args.without) | ({'flip_averaging'} if args.no_flip else set()))
    if args.paired and not keys:
        raise SystemExit('--paired needs --without KEY')
    if args.against is not None and keys:
        raise SystemExit('--against times two weights folders as they are; it takes no --without')

    from vpcli.examples import write_example
    from vpcli.model_card import machine_description

    voxelprompt = shutil.which('voxelprompt', path=str(Path(sys.executable).parent)) or 'voxelprompt'

    def timed(weights: Path, scan: Path, out: Path) -> tuple[float, dict]:
        started = time.perf_counter()
        completed = subprocess.run(
            [voxelprompt, 'run', '--prompt', args.prompt, str(scan), '-o', str(out),
             '--overwrite', '--threads', str(args.threads), '--weights', str(weights), '--json'],
            capture_output=True, text=True)
        seconds = time.perf_counter() - started
        if completed.returncode != 0:
            raise SystemExit(f'voxelprompt run failed: {completed.stderr.strip().splitlines()[-1]}')
        return seconds, json.loads(completed.stdout)

    def summary(seconds: list[float], metrics: dict) -> dict:
        return {'wall_seconds': {'median': round(statistics.median(seconds), 2),
                                 'min': round(min(seconds), 2), 'max': round(max(seconds), 2)},
                'answer_values': {o['name']: o['value'] for o in metrics.get('outputs', [])}}

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        scan = write_example(folder / 'example')['T1w']
        variant = without(args.weights, folder, keys) if keys else args.weights
        runs = {'as shipped': args.weights, f'without {", ".join(keys)}': variant} \
            if args.paired else {f'without {", ".join(keys)}' if keys else 'as shipped': variant}
        if args.against is not None:
            runs = {str(args.weights): args.weights, str(args.against): args.against}
        seconds = {name: [] for name in runs}
        metrics = {}
        for repeat in range(args.repeats):
            for name, weights in runs.items():
                elapsed, metrics[name] = timed(weights, scan, folder / 'out')
                seconds[name].append(elapsed)
    report = {'prompt': args.prompt, 'threads': args.threads, 'repeats': args.repeats,
              'machine': machine_description(),
              'runs': {name: summary(seconds[name], metrics[name]) for name in runs}}
    if args.paired or args.against is not None:
        first, second = (statistics.median(seconds[name]) for name in runs)
        report['median_ratio'] = round(first / second, 3)
    print(json.dumps(report, indent=2))


if __name__ == '__main__':
    main()
