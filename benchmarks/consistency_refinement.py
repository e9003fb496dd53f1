"""The consistency suite's cases scored by the vision network directly, with and without
intensity refinement: per resolution variant the mask volume (voxels > 0.5) and the soft
volume (sum of probabilities), so that the spread of a case can be traced to refinement
on a coarse scan interpolated finer (docs/vision.md "Thick slices").

    .venv/bin/python benchmarks/consistency_refinement.py [--weights weights] [--cases 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--weights', default='weights')
    parser.add_argument('--cases', type=int, default=3)
    args = parser.parse_args()

    import numpy as np
    import torch

    from vpcli.evaluate.common import CONSISTENCY_VARIANTS
    from vpcli.evaluate.consistency import transform_scans
    from vpcli.evaluate.tasks import _draw_task
    from vpcli.library.registry import registry
    from vpcli.vision.targets import target_key
    from vpcli.weights import load_bundle

    torch.set_num_threads(1)
    network = load_bundle(args.weights).vision
    volume_of = registry()['volume'].func
    for index in range(args.cases):
        draft, world = _draw_task('consistency', 0, index, 'volume')
        target = draft.segments[0][1]
        print(f'case {index + 1}: {target}, truth {volume_of(world.mask(target, 0)):.2f} mL')
        for refine in (True, False):
            hard = {}
            for name, (spacing, reorient) in CONSISTENCY_VARIANTS.items():
                scans = transform_scans(world.case.scans, spacing, reorient)
                with torch.no_grad():
                    if not refine:
                        network.refines = lambda: False
                    encoding = network.encode(scans)
                    [probability] = network.session_probabilities(
                        encoding, probabilities=network.select(encoding, target_key(target)),
                        fine=network.refines())
                    network.__dict__.pop('refines', None)
                voxel_ml = abs(float(np.linalg.det(
                    probability.geometry.tensor.double().cpu().numpy()[:3, :3]))) / 1000
                tensor = probability.tensor[0].float()
                hard[name] = float((tensor > 0.5).sum()) * voxel_ml
                print(f'  refinement {"on " if refine else "off"} {name:18s} '
                      f'mask {hard[name]:8.2f} mL  soft {float(tensor.sum()) * voxel_ml:8.2f} mL  '
                      f'grid {tuple(tensor.shape)}', flush=True)
            values = list(hard.values())
            print(f'  refinement {"on " if refine else "off"} spread '
                  f'{(max(values) - min(values)) / statistics.median(values):.1%}')


if __name__ == '__main__':
    main()
