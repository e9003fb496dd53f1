"""Does the vision network of a training checkpoint segment the target it is asked for?

Runs joint-stage episodes exactly as ``voxelprompt train`` builds them (the task, its
extra targets, φ from the language model at each segment ``<MOD>``), on synthetic cases of
the training distribution at steps the run has not reached, without updating anything.
Per segmentation it prints the target's share of the grid (truth), the predicted share
(probability > 0.5), the mean probability inside and outside the truth, and Dice; then per
checkpoint:

- mean Dice, and the share of targets whose mask is more than 3x too large;
- ``same_mask``: mean pairwise Dice between the masks of different targets on one
  encoding (1.0: one mask whatever the target; 0: disjoint masks).

    .venv/bin/python benchmarks/target_masks.py [--checkpoint weights/train-state/small-checkpoint.pt]
        [--first-step 100000] [--episodes 6]
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--checkpoint', default='weights/train-state/small-checkpoint.pt')
    parser.add_argument('--first-step', type=int, default=100_000,
                        help='first episode step (beyond the run, so its cases are unseen)')
    parser.add_argument('--episodes', type=int, default=6)
    parser.add_argument('--threads', type=int, default=2)
    args = parser.parse_args()

    import numpy as np
    import torch

    from vpcli.agent.corpus import scan_lines
    from vpcli.metrics import dice
    from vpcli.train import JointTrainer

    torch.set_num_threads(args.threads)
    trainer = JointTrainer.resume(args.checkpoint)
    trainer.agent.eval()
    trainer.vision.train()  # so segment() keeps its probabilities; nothing is stepped
    recipe = trainer.recipe
    dice_all, too_large, overlaps = [], [], []
    print(f'checkpoint {args.checkpoint} (step {trainer.step})')
    print(f'{"step":>6}  {"target":36s} {"truth":>7} {"pred":>7} {"p_in":>6} {"p_out":>6} {"dice":>6}')
    for offset in range(args.episodes):
        # one episode per case block, drawn as train_step draws them
        step = args.first_step + offset * recipe.tasks_per_case
        trainer.step = step
        rng = np.random.default_rng([recipe.seed, step])
        draft, world = trainer._joint_task(rng)
        if draft is None:
            continue
        if recipe.joint_code_batch:
            trainer._code_loss(rng, recipe.joint_code_batch)
        extras = trainer._extra_targets(rng, world) if recipe.targets_per_encode else ()
        lines = scan_lines(world.case, rng, recipe.unknown_metadata)
        _, _, scorer = trainer._joint_loss(draft, world, extras, lines)
        for encoding in scorer.encodings:
            masks = []
            for index, record in enumerate(encoding.segmentations):
                for session, (group, probability) in enumerate(zip(encoding.sessions,
                                                                   record.probabilities)):
                    truth = world.mask_on(record.target, encoding.scans[group[0]].name)
                    truth = truth.volume.tensor.bool().cpu().numpy()
                    p = probability.tensor.detach().cpu().numpy()
                    predicted = p > 0.5
                    share, true_share = float(predicted.mean()), float(truth.mean())
                    overlap = dice(predicted, truth)
                    dice_all.append(overlap)
                    too_large.append(share > 3 * true_share)
                    masks.append((index, session, predicted))
                    inside = float(p[truth].mean()) if truth.any() else float('nan')
                    print(f'{step:6d}  {record.target[:36]:36s} {true_share:7.4f} {share:7.4f} '
                          f'{inside:6.3f} {float(p[~truth].mean()):6.3f} {overlap:6.3f}')
            for (i, s, a), (j, t, b) in itertools.combinations(masks, 2):
                if i != j and s == t:  # different targets, same session
                    overlaps.append(dice(a, b))
    same = f'{np.mean(overlaps):.3f} ({len(overlaps)} pairs)' if overlaps else 'n/a (one target per case)'
    print(f'segmentations {len(dice_all)}  mean Dice {np.mean(dice_all):.3f}  '
          f'masks > 3x too large {np.mean(too_large):.0%}  same_mask {same}')


if __name__ == '__main__':
    main()
