"""Volume bias of the dense vision network per label, on held-out synthetic samples.

A volume is what most answers report, so a mask that is systematically too large (or too
small) for a structure makes every answer about it wrong by that factor, however good its
Dice. This benchmark draws samples as the dense stage trains on them (``DenseSynthesizer``,
the training sources, a seed the run never used: new GCA label maps, new deformations,
contrasts and crops; no lesions), runs the network on them and prints per label: the true
volume, the ratio of the mask's volume (probability > 0.5, as ``segment`` thresholds) to
the truth, the ratio of the summed probabilities to the truth, and Dice.

With ``--fit FILE`` it also fits the volume calibration (one logit offset per calibrated
label, as the export does) on the first half of the samples and scores it on the other
half. A network exported with a calibration (``VisionConfig.logit_offsets``,
docs/vision.md "Volume calibration") is scored without and with its own offsets.

    .venv/bin/python benchmarks/volume_bias.py [--samples 24] [--seed 7] [--weights weights]
        [--fit offsets.json] [--template-probability 1]

``--template-probability 1`` draws every sample with the real T1 intensities of its source
(the fsaverage T1, the GCA's T1 means) instead of random contrasts: the volume bias of
real-looking T1 scans.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--samples', type=int, default=24)
    parser.add_argument('--seed', type=int, default=7, help='synthesis seed (training used 0)')
    parser.add_argument('--shape', type=int, default=64)
    parser.add_argument('--gca-draws', type=int, default=3)
    parser.add_argument('--weights', default=None)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--template-probability', type=float, default=None,
                        help='share of samples with real T1 intensities (1: all; default: as in training)')
    parser.add_argument('--fit', default=None, help='fit offsets on half the samples, write them here')
    args = parser.parse_args()

    import torch

    from vpcli.vision.calibration import (calibrated_channels, fit_offsets, label_counts,
                                          synthetic_logits, volume_summary)
    from vpcli.weights import load_bundle

    torch.set_num_threads(args.threads)
    network = load_bundle(args.weights, 'cpu').vision
    network.eval()
    config = network.config
    anatomy = config.anatomy_channels
    logits, truths = synthetic_logits(network, args.samples, args.seed, args.shape, args.gca_draws,
                                      template_probability=args.template_probability)
    names = ('background',) + tuple(config.label_names)
    runs = [('without offsets', torch.zeros(anatomy))]
    if config.logit_offsets:
        runs.append(('with the shipped offsets', torch.tensor(config.logit_offsets)))
    if args.fit:
        half = len(logits) // 2
        fitted = fit_offsets(logits[:half], truths[:half], network._mirror_channels(),
                             channels=calibrated_channels(config.label_names))
        Path(args.fit).write_text(json.dumps({
            'offsets': [round(float(v), 4) for v in fitted], 'channels': list(names)}) + '\n')
        print(f'offsets fitted on {half} samples written to {args.fit}; '
              f'scored below on the other {len(logits) - half}')
        logits, truths = logits[half:], truths[half:]
        runs.append(('with the fitted offsets', fitted))
    for title, offsets in runs:
        true, mask, soft, overlap = label_counts(logits, truths, offsets)
        print(f'\n{title}: per label (true mL over all samples; ratios of mask / summed '
              f'probability to the truth; Dice)')
        print(f'{"label":<34}{"true mL":>9}{"mask":>7}{"soft":>7}{"dice":>7}')
        for k in range(1, anatomy):
            if true[k] >= 50 and not names[k].startswith('ctx-'):
                print(f'{names[k]:<34}{float(true[k]) * 8 / 1000:>9.1f}'
                      f'{float(mask[k] / true[k]):>7.2f}{float(soft[k] / true[k]):>7.2f}'
                      f'{float(2 * overlap[k] / (mask[k] + true[k])):>7.3f}')
        summary = volume_summary(logits, truths, offsets)
        print(f'all {summary["labels"]} labels: median mask/true {summary["median_volume_ratio"]:.3f}, '
              f'median |log ratio| {summary["median_abs_log_ratio"]:.3f}, '
              f'mean Dice {summary["mean_dice"]:.4f}')


if __name__ == '__main__':
    main()
