"""How well the QC score and flags track the true Dice of masks, over many targets per case.

The anatomy suite calibrates QC on one mask per task (few of them good). This benchmark
segments every anatomical target of a few kinds on held-out synthetic cases (the
evaluation anatomy source, ``split='eval'``), one encoding per case, and compares each
mask's ``quality`` block (what ``metrics.json`` gets, :func:`vpcli.quality.assess`) with
its true Dice. It prints, overall and per target kind: the masks, the Spearman correlation
of the QC score with Dice, and the share flagged among good (Dice >= 0.8) and poor
(Dice < 0.5) masks (issue 23 asks for at most 5 % of good masks flagged).

    .venv/bin/python benchmarks/qc_calibration.py [--cases 6] [--seed 0] [--weights weights]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: target kinds segmented on every case (cortical parcels: every fourth, for time)
KINDS = ('subcortical', 'ventricle', 'tissue', 'lobe', 'group', 'cortex')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--cases', type=int, default=6)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--weights', default=None)
    parser.add_argument('--threads', type=int, default=2)
    args = parser.parse_args()

    import numpy as np
    import torch
    from scipy.stats import spearmanr

    from vpcli.evaluate import mask_dice
    from vpcli.library.morphometry import volume
    from vpcli.quality import assess
    from vpcli.tasks.ontology import load_ontology
    from vpcli.tasks.oracle import make_world
    from vpcli.tasks.sampler import plan_task
    from vpcli.weights import load_bundle

    torch.set_num_threads(args.threads)
    network = load_bundle(args.weights, 'cpu').vision
    network.eval()
    ontology = load_ontology()
    targets = []
    for kind in KINDS:
        names = sorted(t.name for t in ontology.targets_of_kind(kind))
        targets += [(kind, name) for name in (names[::4] if kind == 'cortex' else names)]
    rows = []
    for case in range(args.cases):
        rng = np.random.default_rng([args.seed, 9100, case])
        plan = plan_task(rng, 'volume')
        info, world = make_world(plan, rng, split='eval')
        scan = world.case.scans[0]
        with torch.no_grad():
            encoding = network.encode([scan])
            for kind, target in targets:
                if target not in info.present:
                    continue
                mask = network.segment(encoding, target)
                truth = world.mask_on(target, scan.name)
                if not bool(truth.volume.tensor.any()):
                    continue
                block = assess(target, float(volume(mask)), mask.quality)
                rows.append((kind, target, mask_dice(mask, truth), block.get('score'),
                             bool(block['flags'])))
        print(f'case {case + 1}/{args.cases}: {len(rows)} masks so far', file=sys.stderr)

    def report(name, chosen):
        dices = [r[2] for r in chosen]
        scores = [r[3] for r in chosen if r[3] is not None]
        rho = spearmanr([r[3] for r in chosen if r[3] is not None],
                        [r[2] for r in chosen if r[3] is not None])[0] if len(scores) > 2 else float('nan')
        good = [r for r in chosen if r[2] >= 0.8]
        poor = [r for r in chosen if r[2] < 0.5]

        def share(group):
            return f'{100 * np.mean([r[4] for r in group]):.1f} %' if group else 'n/a'
        print(f'{name:12s} masks {len(chosen):4d}  mean Dice {np.mean(dices):.3f}  Spearman {rho:.2f}  '
              f'good {len(good):4d} flagged {share(good):>7s}  poor {len(poor):4d} flagged {share(poor):>7s}')
    print(f'QC calibration on {args.cases} held-out cases (weights {args.weights or "shipped"})')
    report('all', rows)
    for kind in KINDS:
        report(kind, [r for r in rows if r[0] == kind])
    flagged_good = [r for r in rows if r[2] >= 0.8 and r[4]]
    for kind, target, dice, score, _ in flagged_good[:10]:
        print(f'  flagged good mask: {target} ({kind}) Dice {dice:.3f} score {score}')


if __name__ == '__main__':
    main()
