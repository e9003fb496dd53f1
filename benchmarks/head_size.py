"""Head size (eTIV) of real scans from the shipped network's labels: does it measure heads?

FreeSurfer's eTIV is 1948.106 mL / det(A), A the affine from the scan to MNI305
(:mod:`vpcli.vision.head_size`). Three checks, each on real scans installed from packages:

- **the atlas itself**: FreeSurfer's ``mni305.cor.mgz`` is the MNI305 average, so its eTIV is
  1948.106 mL by definition; with its skull and stripped (fsaverage's brain mask);
- **a known scale**: the example scan (nilearn's ICBM152 2009 template) with its voxel size
  multiplied by known factors, isotropic and not: the eTIV ratio against the original
  should equal the product of the factors;
- **a partial field of view**: the example without the top quarter of its brain (no
  vertex) or the bottom 30 % (no cerebellum), as the ``real`` suite cuts it.

    .venv/bin/python benchmarks/head_size.py [--weights weights] [--threads 2]
        [--json docs/benchmarks/head-size-cpu.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SCALES = [(0.85, 0.85, 0.85), (0.9, 0.9, 0.9), (0.95, 0.95, 0.95), (1.05, 1.05, 1.05),
          (1.1, 1.1, 1.1), (1.15, 1.15, 1.15), (1.1, 1.0, 0.9), (0.95, 1.1, 1.05)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--weights', default='weights')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--json', default=None, help='write the results here')
    args = parser.parse_args()

    import numpy as np
    import torch
    import voxel as vx

    from vpcli.examples import TEMPLATE_FILES, template_dir
    from vpcli.real_suite import mni305_with_and_without_skull, partial_fields_of_view
    from vpcli.vision.head_size import ETIV_SCALE_ML
    from vpcli.vision.model import VisionNetwork
    from vpcli.volumes import load_scans

    torch.set_num_threads(args.threads)
    network = VisionNetwork.load(Path(args.weights) / 'vision.pt')

    def head(scan) -> tuple[dict | None, float]:
        start = time.perf_counter()
        with torch.no_grad():
            encoding = network.encode([scan])
            result = network.head_sizes(encoding)[0]
        return result, time.perf_counter() - start

    def etiv(result):
        return None if result is None else result['etiv_ml']

    rows, seconds = {}, []

    # the atlas itself, with and without its skull
    mni305, stripped = mni305_with_and_without_skull()
    for name, scan in (('mni305 skull on', mni305), ('mni305 stripped', stripped)):
        result, took = head(scan)
        seconds.append(took)
        rows[name] = {'etiv_ml': etiv(result), 'expected_ml': ETIV_SCALE_ML, 'fit': result}
        print(f'{name:24s} eTIV {etiv(result)} mL (expected {ETIV_SCALE_ML}); {result}')

    # the example at known scales
    example = load_scans([template_dir() / TEMPLATE_FILES['T1w']])[0]
    base, took = head(example)
    seconds.append(took)
    rows['icbm2009'] = {'etiv_ml': etiv(base), 'fit': base}
    print(f'{"icbm2009":24s} eTIV {etiv(base)} mL; {base}')
    errors = []
    for factors in SCALES:
        matrix = example.volume.geometry.tensor.double().clone()
        matrix[:3, :3] = matrix[:3, :3] * torch.tensor(factors, dtype=matrix.dtype)
        geometry = vx.AcquisitionGeometry(example.volume.baseshape, matrix)
        scan = dataclasses.replace(example, volume=vx.Volume(example.volume.tensor, geometry))
        result, took = head(scan)
        seconds.append(took)
        expected = float(np.prod(factors))
        ratio = etiv(result) / etiv(base) if result and base else None
        error = None if ratio is None else ratio / expected - 1
        if error is not None:
            errors.append(error)
        name = 'icbm2009 x ' + ' '.join(f'{f:g}' for f in factors)
        rows[name] = {'etiv_ml': etiv(result), 'ratio': ratio, 'expected_ratio': expected,
                      'relative_error': error, 'fit': result}
        print(f'{name:24s} eTIV {etiv(result)} mL, ratio {ratio:.4f} against {expected:.4f} '
              f'({100 * error:+.1f} %)')

    # a partial field of view
    with torch.no_grad():
        brain = network.segment(network.encode([example]), 'whole brain')
    mask = brain.volume.tensor[0].cpu().numpy() > 0
    for check, (scan, _) in partial_fields_of_view(example, mask).items():
        result, took = head(scan)
        seconds.append(took)
        ratio = etiv(result) / etiv(base) if result and base else None
        rows[f'icbm2009 {check}'] = {'etiv_ml': etiv(result), 'ratio': ratio, 'fit': result}
        print(f'{"icbm2009 " + check:24s} eTIV {etiv(result)} mL, ratio to the whole scan '
              f'{ratio if ratio is None else round(ratio, 4)}')

    summary = {
        'mni305_error': rows['mni305 skull on']['etiv_ml'] / ETIV_SCALE_ML - 1
        if rows['mni305 skull on']['etiv_ml'] else None,
        'skull_on_off_ratio': rows['mni305 stripped']['etiv_ml'] / rows['mni305 skull on']['etiv_ml']
        if rows['mni305 stripped']['etiv_ml'] and rows['mni305 skull on']['etiv_ml'] else None,
        'scale_error_median_abs': float(np.median(np.abs(errors))) if errors else None,
        'scale_error_max_abs': float(np.max(np.abs(errors))) if errors else None,
        'seconds_per_scan_median': float(np.median(seconds)),
    }
    print('summary: ' + json.dumps({k: None if v is None else round(v, 4)
                                    for k, v in summary.items()}))
    if args.json:
        result = {'benchmark': 'benchmarks/head_size.py', 'weights': args.weights,
                  'threads': args.threads, 'machine': platform.processor() or platform.machine(),
                  'summary': summary, 'rows': rows}
        Path(args.json).write_text(json.dumps(result, indent=2) + '\n')


if __name__ == '__main__':
    main()
