"""Median time to make one training case (training resolution) on this machine.

Usage: python benchmarks/bench_synth.py [--cases N] [--threads T]

Prints the number of cases timed and the median and range of wall-clock seconds per
case. The anatomy source is loaded (and cached) before timing, as in a training run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--cases', type=int, default=10, help='cases to time')
    parser.add_argument('--threads', type=int, default=1, help='torch threads')
    args = parser.parse_args()

    import torch
    torch.set_num_threads(args.threads)
    from vpcli.synth.cases import sample_case

    sample_case(0, lesions=False, modalities=['T1w'])  # load and cache the source
    times, scans, lesions = [], 0, 0
    for seed in range(1, args.cases + 1):
        start = time.perf_counter()
        case = sample_case(seed, split='train', training_resolution=True)
        times.append(time.perf_counter() - start)
        scans += len(case.scans)
        lesions += sum(1 for l in case.lesions if l.session == '01')
    print(f'cases timed: {len(times)} (training resolution, {torch.get_num_threads()} torch '
          f'thread(s); {scans / len(times):.1f} scans and {lesions / len(times):.1f} lesions '
          f'per case on average)')
    print(f'median seconds per case: {statistics.median(times):.2f} '
          f'(min {min(times):.2f}, max {max(times):.2f})')


if __name__ == '__main__':
    main()
