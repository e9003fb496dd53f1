"""Where the lesion figure is lost: found, or found and given the wrong class?

On the held-out cases of ``voxelprompt eval --suite lesions`` (same draws: suite seed and
task index), the network's masks straight from ``segment`` (no program):

- **any lesion**: the mask of target ``lesion`` (every lesion channel) against the union of
  the case's true lesions; what detection alone reaches;
- **per class**: the mask of each class present against that class's true lesions, with
  both voxel counts (under- or over-segmentation).

    .venv/bin/python benchmarks/lesion_channels.py [--weights weights] [--count 20]
        [--threads 2]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch


def first(mask):
    return mask[0] if isinstance(mask, tuple) else mask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--weights', default=None)
    parser.add_argument('--count', type=int, default=20)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--threads', type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from vpcli.evaluate.tasks import _draw_task
    from vpcli.metrics import dice      # every truth here holds a lesion, so never 0/0
    from vpcli.tasks.ontology import AnatomyTarget, load_ontology, parse_target
    from vpcli.weights import load_bundle
    ontology = load_ontology()
    vision = load_bundle(args.weights).vision.eval()

    def accept(draft, world) -> bool:
        return not isinstance(parse_target(draft.segments[0][1]), AnatomyTarget)

    found = []
    for index in range(args.count):
        draft, world = _draw_task('lesions', args.seed, index, 'segmentation', accept,
                                  lambda plan: bool(plan.params.get('lesion')))
        scans = list(world.case.scans)
        name = scans[0].name
        with torch.no_grad():
            encoding = vision.encode(scans)
            predicted = first(vision.segment(encoding, 'lesion')).volume.tensor.numpy()
            truth = world.mask_on('lesion', name).volume.tensor.numpy()
            parts = []
            for key in sorted({lesion.class_key for lesion in world.lesions()}):
                label = ontology.lesion_classes[key].name
                mask = first(vision.segment(encoding, label)).volume.tensor.numpy()
                true = world.mask_on(label, name).volume.tensor.numpy()
                parts.append(f'{label} {dice(mask, true):.2f} ({int(true.sum())} true, '
                             f'{int(mask.sum())} found)')
        found.append(dice(predicted, truth))
        modalities = ', '.join(scan.describe().split(',')[0].split(': ')[-1] for scan in scans)
        print(f'{index:2d} [{modalities}] any lesion {found[-1]:.2f} ({int(truth.sum())} true, '
              f'{int(predicted.sum())} found) | ' + '; '.join(parts), flush=True)
    print(f'any lesion: mean Dice {np.nanmean(found):.3f} (min {np.nanmin(found):.2f}, '
          f'max {np.nanmax(found):.2f}) over {len(found)} cases')


if __name__ == '__main__':
    main()
