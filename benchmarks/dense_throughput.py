"""Throughput of the dense vision stage: samples per second and the share of step time
spent in synthesis, for a recipe on a device (DESIGN.md §5; docs/benchmarks/).

A fresh trainer of the recipe runs ``--warmup`` steps (not timed), then ``--steps`` timed
steps; each step synthesises a batch on the device and trains on it (the real
``DenseTrainer.train_step``). Prints one JSON object: median, minimum and maximum step
seconds, samples per second, synthesis share, the device and the thread count.

    .venv/bin/python benchmarks/dense_throughput.py --recipe dense-cpu --device cpu --threads 2
    .venv/bin/python benchmarks/dense_throughput.py --recipe dense-gpu --device cuda
"""

from __future__ import annotations

import argparse
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
    parser.add_argument('--json', type=Path, default=None, help='also write the result here')
    args = parser.parse_args()

    import torch

    from vpcli.devices import resolve_device
    from vpcli.model_card import machine_description
    from vpcli.train import find_recipe
    from vpcli.vision.dense_training import DenseRecipe, DenseTrainer

    torch.set_num_threads(args.threads)
    recipe = DenseRecipe.load(find_recipe(args.recipe))
    device = resolve_device(args.device)
    trainer = DenseTrainer.create(recipe, device)
    for _ in range(args.warmup):
        trainer.train_step()
    entries = [trainer.train_step() for _ in range(args.steps)]
    seconds = [e['seconds'] for e in entries]
    synthesis = [e['synthesis_seconds'] for e in entries]
    result = {
        'recipe': recipe.name, 'device': device, 'threads': args.threads,
        'machine': machine_description(), 'batch_size': recipe.batch_size,
        'shape': recipe.shape, 'spacing_mm': recipe.spacing_mm, 'steps': args.steps,
        'step_seconds': {'median': round(statistics.median(seconds), 3),
                         'min': round(min(seconds), 3), 'max': round(max(seconds), 3)},
        'samples_per_second': round(recipe.batch_size * len(seconds) / sum(seconds), 3),
        'synthesis_share': round(sum(synthesis) / sum(seconds), 4),
        'synthesis_seconds_median': round(statistics.median(synthesis), 4),
        'parameters': sum(p.numel() for p in trainer.network.parameters()),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + '\n')


if __name__ == '__main__':
    main()
