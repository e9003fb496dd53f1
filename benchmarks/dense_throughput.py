"""Throughput of the dense vision stage: samples per second and the share of step time
spent in synthesis, for a recipe on a device (DESIGN.md §5; docs/benchmarks/).

A fresh trainer of the recipe runs ``--warmup`` steps (not timed), then ``--steps`` timed
steps; each step synthesises a batch on the device and trains on it (the real
``DenseTrainer.train_step``). Prints one JSON object: median, minimum and maximum step
seconds, samples per second, synthesis share, the device and the thread count.

    .venv/bin/python benchmarks/dense_throughput.py --recipe dense-cpu --device cpu --threads 2
    .venv/bin/python benchmarks/dense_throughput.py --recipe dense-gpu --device cuda
    .venv/bin/python benchmarks/dense_throughput.py --recipe dense-cpu --paired

``--paired`` times bf16 autocast against fp32 on one trainer, in alternating blocks of
``--steps`` steps (``--rounds`` of each), and prints both medians and their ratio: a
ratio measured in one run, which a noisy machine moves far less than two runs' times.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--recipe', default='dense-cpu')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--steps', type=int, default=10)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--precision', choices=['recipe', 'auto', 'fp32'], default='recipe',
                        help="override the recipe's precision (bf16 autocast where it helps)")
    parser.add_argument('--paired', action='store_true',
                        help='alternate bf16 autocast and fp32 blocks on one trainer')
    parser.add_argument('--rounds', type=int, default=4, help='--paired: blocks of each')
    parser.add_argument('--json', type=Path, default=None, help='also write the result here')
    args = parser.parse_args()

    import torch

    from vpcli.devices import resolve_device
    from vpcli.model_card import machine_description
    from vpcli.train import find_recipe
    from vpcli.vision.dense_training import DenseRecipe, DenseTrainer

    torch.set_num_threads(args.threads)
    recipe = DenseRecipe.load(find_recipe(args.recipe))
    if args.precision != 'recipe':
        recipe = dataclasses.replace(recipe, precision=args.precision)
    device = resolve_device(args.device)
    trainer = DenseTrainer.create(recipe, device)
    for _ in range(args.warmup):
        trainer.train_step()
    if args.paired:
        paired(trainer, recipe, args)
        return
    entries = [trainer.train_step() for _ in range(args.steps)]
    seconds = [e['seconds'] for e in entries]
    synthesis = [e['synthesis_seconds'] for e in entries]
    result = {
        'recipe': recipe.name, 'device': device, 'threads': args.threads,
        'machine': machine_description(), 'batch_size': recipe.batch_size,
        'shape': recipe.shape, 'spacing_mm': recipe.spacing_mm, 'steps': args.steps,
        'step_seconds': _summary(seconds),
        'samples_per_second': round(recipe.batch_size * len(seconds) / sum(seconds), 3),
        'synthesis_share': round(sum(synthesis) / sum(seconds), 4),
        'synthesis_seconds_median': round(statistics.median(synthesis), 4),
        'precision': recipe.precision, 'bf16_autocast': trainer.autocast,
        'parameters': sum(p.numel() for p in trainer.network.parameters()),
    }
    _emit(result, args.json)


def _summary(seconds: list[float]) -> dict:
    """Median, minimum and maximum of step times, rounded to milliseconds."""
    return {'median': round(statistics.median(seconds), 3), 'min': round(min(seconds), 3),
            'max': round(max(seconds), 3)}


def _emit(result: dict, path: Path | None) -> None:
    """Print the result as JSON and, with ``--json``, write it there too."""
    text = json.dumps(result, indent=2)
    print(text)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + '\n')


def paired(trainer, recipe, args) -> None:
    """bf16 autocast against fp32, alternating blocks on one trainer (same weights, same
    synthesis stream, same machine load)."""
    from vpcli.model_card import machine_description
    seconds = {'auto': [], 'fp32': []}
    for _ in range(args.rounds):
        for precision in ('auto', 'fp32'):
            trainer.recipe = dataclasses.replace(recipe, precision=precision)
            seconds[precision] += [trainer.train_step()['seconds'] for _ in range(args.steps)]
    trainer.recipe = dataclasses.replace(recipe, precision='auto')
    result = {
        'recipe': recipe.name, 'device': trainer.device, 'threads': args.threads,
        'machine': machine_description(), 'batch_size': recipe.batch_size,
        'shape': recipe.shape, 'bf16_autocast_on_this_machine': trainer.autocast,
        'steps_each': len(seconds['auto']),
        'bf16_step_seconds': _summary(seconds['auto']),
        'fp32_step_seconds': _summary(seconds['fp32']),
        'ratio_bf16_over_fp32': round(statistics.median(seconds['auto'])
                                      / statistics.median(seconds['fp32']), 3),
    }
    _emit(result, args.json)


if __name__ == '__main__':
    main()
