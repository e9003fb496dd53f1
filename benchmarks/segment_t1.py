"""Median time of ``segment`` (one target) on a 1 mm 182 x 218 x 182 T1, on CPU.

The T1 is the bundled example (nilearn's MNI ICBM152 2009 template, 1 mm) cropped/padded
about its centre to 182 x 218 x 182 voxels. The network has the ``small`` config's
widths and random (seeded) weights: speed does not depend on the weights.

    .venv/bin/python benchmarks/segment_t1.py [--threads 2] [--repeats 5] [--config small]
        [--min-spacing-mm 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--config', default='small')
    parser.add_argument('--min-spacing-mm', type=float, default=0.0,
                        help='working-spacing floor (the shipped CPU weights use 2)')
    args = parser.parse_args()

    import torch
    import voxel as vx

    from vpcli.examples import TEMPLATE_FILES, template_dir
    from vpcli.library.context import RunContext
    from vpcli.library.vision import encode, segment
    from vpcli.vision.config import named_config
    from vpcli.vision.model import VisionNetwork
    from vpcli.volumes import Scan

    torch.set_num_threads(args.threads)
    volume = vx.load_volume(template_dir() / TEMPLATE_FILES['T1w'])
    volume = volume.new(volume.tensor.float()).reshape(182, 218, 182)
    scan = Scan(volume=volume, name='img0', modality='T1w')
    import dataclasses
    network = VisionNetwork(dataclasses.replace(named_config(args.config),
                                                min_spacing_mm=args.min_spacing_mm)).eval()
    context = RunContext(scans=[scan], vision=network)

    encode_seconds, segment_seconds, segment_cpu_seconds = [], [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        enc = encode(context, scan)
        encode_seconds.append(time.perf_counter() - start)
        start, start_cpu = time.perf_counter(), time.process_time()
        mask = segment(context, enc, 'brain', phi=[0.1] * network.config.phi_size)
        segment_seconds.append(time.perf_counter() - start)
        segment_cpu_seconds.append(time.process_time() - start_cpu)
    print(f'T1 {tuple(volume.baseshape)} at {volume.geometry.spacing.tolist()} mm, '
          f'network input {tuple(enc.prepared[0].volume.baseshape)} after the head crop; '
          f'config {args.config}, working-spacing floor {args.min_spacing_mm:g} mm, '
          f'{args.threads} threads, {args.repeats} repeats')
    print(f'encode median {statistics.median(encode_seconds):.2f} s '
          f'(all: {", ".join(f"{s:.2f}" for s in encode_seconds)})')
    print(f'segment median {statistics.median(segment_seconds):.2f} s '
          f'(all: {", ".join(f"{s:.2f}" for s in segment_seconds)}); '
          f'CPU time median {statistics.median(segment_cpu_seconds):.2f} s')
    print(f'mask on the input grid: {tuple(mask.volume.baseshape)}, '
          f'{int(mask.volume.tensor.sum())} voxels')


if __name__ == '__main__':
    main()
