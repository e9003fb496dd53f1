"""A tiny but real weights folder for CLI tests: an agent trained for seconds on the small
hand-written task world of ``agent_corpus`` (it writes those programs exactly) and a tiny,
untrained vision network. Built by the real training code and written by the real
``write_weights``; the shipped weights are tested by the golden test."""

from __future__ import annotations

from pathlib import Path

import torch

from agent_corpus import corpus, sample
from vpcli.agent.tokenizer import train_tokenizer
from vpcli.agent.training import TrainConfig, Trainer
from vpcli.vision.config import VisionConfig
from vpcli.vision.model import VisionNetwork
from vpcli.weights import write_weights

#: ε width of the tiny pair
WIDTH = 16


def make_tiny_weights(folder: Path, steps: int = 500) -> Path:
    """Train the tiny agent and write a weights folder; returns the folder.

    500 steps: with a volume read back as a real run reads an empty mask's ("0 mL"), the
    300-step agent wrote 7 of the 36 corpus programs wrong after step 1 (the answer named
    another structure than the one it segmented); the 500-step agent, none."""
    torch.set_num_threads(1)
    folder = Path(folder)
    tokenizer = train_tokenizer(corpus(), folder / 'tokenizer.model', vocab_size=600)
    config = TrainConfig(preset='tiny', steps=steps, batch_size=8, learning_rate=3e-3,
                         warmup_steps=20, log_every=10_000, encoding_width=WIDTH)
    trainer = Trainer(config, tokenizer, lambda rng, n: sample(rng, n))
    trainer.train(log=lambda line: None)
    vision = VisionNetwork(VisionConfig(widths=(4, 8, 8), embedding_width=WIDTH, seed=0))
    write_weights(folder, trainer.model, tokenizer, vision,
                  {'recipe': 'test-tiny', 'steps': steps, 'evaluation': {}})
    return folder
