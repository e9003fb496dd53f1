"""Coarse and thick-slice scans under two run-time keys of the dense vision network:
brain, white matter and grey matter Dice and volumes.

- ``--compare refinement`` (default): a scan no finer than the working grid (2 mm and
  coarser) is not refined unless ``refinement_spacing_mm`` is set; then it is refined on a
  grid of that spacing interpolated from it and averaged back onto its own grid
  (docs/vision.md "Coarse scans"). Compares the key 0 with ``--spacing``, both with
  ``isotropic_working_grid`` off (as measured before that key).
- ``--compare isotropic``: ``isotropic_working_grid`` off (a thick-slice axis kept on the
  working grid) against on (every axis at the 2 mm the dense stage trains on;
  docs/vision.md "Thick slices"), ``refinement_spacing_mm`` 0.

The scans:

- the MNI example (ICBM 2009c, 1 mm) resampled to 2 mm, 2.5 mm and 2 x 2 x 5 mm (trilinear,
  antialiased, as the consistency suite resamples), against its tissue map averaged onto that grid
  (brain: tissue > 0, white matter 2, grey matter 1);
- the consistency suite's cases (synthetic, anisotropic thick-slice scans of the held-out
  anatomy source), against their label maps.

It prints, per scan and setting, the Dice and the mask volumes (mL) next to the truth's.

    .venv/bin/python benchmarks/coarse_refinement.py [--weights weights]
        [--compare refinement|isotropic] [--spacing 1.0] [--cases 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARGETS = ('whole brain', 'bilateral cerebral white matter', 'bilateral grey matter')


def main() -> None:
    import numpy as np
    import torch

    from vpcli.evaluate.consistency import transform_scans
    from vpcli.evaluate.tasks import _draw_task
    from vpcli.examples import write_example
    from vpcli.metrics import dice
    from vpcli.volumes import load_scans, load_volume, voxel_spacing_mm
    from vpcli.weights import load_bundle

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--weights', type=Path, default=Path('weights'))
    parser.add_argument('--compare', choices=('refinement', 'isotropic'), default='refinement')
    parser.add_argument('--spacing', type=float, default=1.0,
                        help='refinement_spacing_mm to compare with 0 (mm)')
    parser.add_argument('--cases', type=int, default=3, help='consistency-suite cases')
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--json', type=Path, help='also write the figures here')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    network = load_bundle(args.weights).vision
    network.eval()
    base = network.config
    if args.compare == 'refinement':
        settings = {'key 0': dict(isotropic_working_grid=False, refinement_spacing_mm=0.0),
                    f'key {args.spacing:g}': dict(isotropic_working_grid=False,
                                                  refinement_spacing_mm=args.spacing)}
    else:
        settings = {'thick axes kept': dict(isotropic_working_grid=False,
                                            refinement_spacing_mm=0.0),
                    'isotropic': dict(isotropic_working_grid=True, refinement_spacing_mm=0.0)}

    def score(scan, truths) -> dict:
        grid = scan.volume.geometry
        voxel_ml = float(np.prod(voxel_spacing_mm(grid))) / 1000.0
        truth = [t.new(t.tensor.float()).resample_like(grid, mode='linear', antialias=True)
                 .tensor[0].cpu().numpy() > 0.5 for t in truths]
        row = {'spacing_mm': [round(float(s), 2) for s in voxel_spacing_mm(grid)],
               'truth_ml': [round(float(t.sum()) * voxel_ml, 1) for t in truth]}
        for name, overrides in settings.items():
            network.config = dataclasses.replace(base, **overrides)
            with torch.no_grad():
                encoding = network.encode([scan])
                masks = [network.segment(encoding, t).volume.tensor[0].cpu().numpy()
                         for t in TARGETS]
            row[name] = {
                'dice': [round(float(dice(m, t)), 3) for m, t in zip(masks, truth)],
                'ml': [round(float(m.sum()) * voxel_ml, 1) for m in masks]}
        return row

    figures = {'weights': str(args.weights), 'compare': args.compare, 'targets': list(TARGETS),
               'scans': {}}
    with tempfile.TemporaryDirectory() as folder:
        example = write_example(Path(folder))
        scan = load_scans([example['T1w']])[0]
        tissue = load_volume(example['dseg'], label_map=True)
        labels = tissue.tensor.float()
        truths = [tissue.new((labels > 0).float()), tissue.new((labels == 2).float()),
                  tissue.new((labels == 1).float())]
        for spacing in (2.0, 2.5, (2.0, 2.0, 5.0)):
            if isinstance(spacing, tuple):  # thick axial slices on a 2 mm plane
                name = 'MNI example at 2 x 2 x 5 mm'
                volume = scan.volume.new(scan.volume.tensor.float()).resample(
                    torch.tensor(spacing), mode='linear', antialias=True)
                resampled = dataclasses.replace(scan, volume=volume)
            else:
                name = f'MNI example at {spacing:g} mm'
                resampled = transform_scans([scan], spacing)[0]
            figures['scans'][name] = score(resampled, truths)
            print(name, json.dumps(figures['scans'][name]), flush=True)
    for index in range(args.cases):
        draft, world = _draw_task('consistency', 0, index, 'volume')
        scan = world.case.scans[0]
        name = f'consistency case {index + 1} ({draft.segments[0][1]})'
        figures['scans'][name] = score(scan, [world.mask_on(t, scan.name).volume
                                              for t in TARGETS])
        print(name, json.dumps(figures['scans'][name]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + '\n')


if __name__ == '__main__':
    main()
