"""Brain, white matter and grey matter on held-out synthetic scans at 1 mm, against the
training world's own (FreeSurfer-style) truth.

The real templates of ``eval --suite example`` and ``--suite real`` are scored against
references drawn to other protocols (the ICBM tissue maps, the atlases), where a brain edge
or a grey-matter boundary can disagree with FreeSurfer's by a voxel everywhere. This
benchmark asks the same three targets on cases drawn from the held-out anatomy source at
1 mm (``sample_case(split='eval', training_resolution=False)``: one T1w per case, no
lesions), where the truth is the label map itself, so a run-time change (say,
``edge_refinement``) can be checked against both references. It runs the targets as a
program's ``encode`` / ``segment`` do (k* teacher-forced through the language model,
``--programs target`` of the evaluation suites) and prints per target the mean Dice and the
mask/true volume ratios; ``--without KEY`` scores the same weights with a run-time key off
(a temporary copy, as ``benchmarks/run_timing.py`` makes it).

    .venv/bin/python benchmarks/fine_synthetic.py [--weights weights] [--cases 6]
        [--without edge_refinement] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARGETS = ('whole brain', 'bilateral cerebral white matter', 'bilateral grey matter')


def score(weights: Path, cases: int, seed: int, template_probability: float) -> dict:
    """Per target the Dice and mask/true volume ratio on each case."""
    import numpy as np

    from vpcli.evaluate.tasks import run_task
    from vpcli.metrics import dice
    from vpcli.synth.cases import sample_case
    from vpcli.tasks.categories import TaskDraft
    from vpcli.tasks.oracle import SynthWorld
    from vpcli.weights import load_bundle

    bundle = load_bundle(weights)
    program = '# step 1\nenc = encode(img0)\n' + ''.join(
        f'# step {k + 2}\nm{k} = segment(enc, "{target}")\n' for k, target in enumerate(TARGETS))
    draft = TaskDraft('segmentation', 'fine synthetic', 'segment', (), program,
                      tuple((f'm{k}', target) for k, target in enumerate(TARGETS)),
                      lambda world: None)
    result = {target: {'dice': [], 'volume_ratio': []} for target in TARGETS}
    for index in range(cases):
        case = sample_case(np.random.default_rng([seed, index]), split='eval',
                           training_resolution=False, modalities=['T1w'], lesions=False,
                           longitudinal=False, contrast_pair=False, diffusion_pair=False,
                           template_probability=template_probability)
        world = SynthWorld(case)
        scan = case.scans[0]
        task = run_task(bundle, draft, world, [scan], programs='target')
        if task.error:
            raise SystemExit(f'case {index}: {task.error}')
        masks = [entry.volume for entry in task.program_run.context.saved if entry.kind == 'mask']
        for target, mask in zip(TARGETS, masks):
            truth = world.mask_on(target, scan.name).volume.tensor[0].cpu().numpy() > 0.5
            made = mask.volume.tensor[0].cpu().numpy() > 0.5
            result[target]['dice'].append(round(float(dice(made, truth)), 4))
            result[target]['volume_ratio'].append(round(float(made.sum() / truth.sum()), 3))
        print(f'case {index}: {tuple(scan.volume.baseshape)} ' + ', '.join(
            f'{t} {result[t]["dice"][-1]:.3f}' for t in TARGETS), file=sys.stderr)
    for target in TARGETS:
        result[target]['mean_dice'] = round(float(np.mean(result[target]['dice'])), 4)
        result[target]['median_volume_ratio'] = float(np.median(result[target]['volume_ratio']))
    return result


def main() -> None:
    import torch

    from run_timing import without
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--weights', type=Path, default=Path('weights'))
    parser.add_argument('--cases', type=int, default=6)
    parser.add_argument('--seed', type=int, default=77)
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--template-probability', type=float, default=0.5,
                        help='chance a case takes its source T1 intensities (else per-label '
                             'intensities of a modality)')
    parser.add_argument('--without', action='append', default=[], metavar='KEY',
                        help='score with this run-time key off as well (repeatable)')
    parser.add_argument('--json', type=Path, help='also write the figures here')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    figures = {'weights': str(args.weights), 'cases': args.cases, 'seed': args.seed,
               'template_probability': args.template_probability, 'threads': args.threads}
    with tempfile.TemporaryDirectory() as folder:
        runs = {'as shipped': args.weights}
        if args.without:
            runs['without ' + ', '.join(args.without)] = without(args.weights, Path(folder),
                                                                 args.without)
        for name, weights in runs.items():
            figures[name] = score(weights, args.cases, args.seed, args.template_probability)
            print(f'{name}: ' + '; '.join(
                f'{t} Dice {figures[name][t]["mean_dice"]:.3f}, volume x'
                f'{figures[name][t]["median_volume_ratio"]:.3f}' for t in TARGETS))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + '\n')


if __name__ == '__main__':
    main()
