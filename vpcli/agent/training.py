"""Code-only training of the language model (cross-entropy on target programs).

Per step, a batch of episodes is drawn from a seeded source (the task sampler's training
split plus the refusal category); the loss is token cross-entropy on program tokens,
``<STEP>``, ``<STOP>`` and ``<REFUSE>`` only (prompt and feedback positions are masked).
Joint training with the vision loss is the training module's (DESIGN.md §2).

Exact resumption: the batch of step ``s`` is drawn from ``default_rng([seed, s])``, so the
data stream needs no state; the checkpoint holds model, optimizer, scheduler position,
torch RNG state and step. Training for N steps in one go or in pieces gives the same weights.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from vpcli.agent.episodes import Episode, encode_episode
from vpcli.agent.model import AgentConfig, AgentModel
from vpcli.agent.tokenizer import EMBEDDING, MOD, Tokenizer

#: an episode source: draws one batch of episodes from a generator
EpisodeSource = Callable[[np.random.Generator, int], list[Episode]]


@dataclasses.dataclass
class TrainConfig:
    """Code-only training settings.

    Attributes:
        preset: Model size (``tiny``, ``small``, ``paper``).
        steps: Optimizer steps in total.
        batch_size: Episodes per step.
        learning_rate: Peak AdamW learning rate.
        warmup_steps: Linear warm-up steps (then cosine decay to 10%).
        weight_decay: AdamW weight decay.
        seed: Seeds the initialisation and the data stream.
        device: Torch device.
        checkpoint_every: Steps between checkpoints.
        log_every: Steps between log lines.
        encoding_width: Width of ε (the vision network's embedding width).
    """
    preset: str = 'small'
    steps: int = 2000
    batch_size: int = 16
    learning_rate: float = 1e-3
    warmup_steps: int = 100
    weight_decay: float = 0.01
    seed: int = 0
    device: str = 'cpu'
    checkpoint_every: int = 250
    log_every: int = 50
    encoding_width: int = 256


def make_batch(tokenizer: Tokenizer, episodes: list[Episode], encoding_width: int,
               rng: np.random.Generator, max_positions: int):
    """Pad episodes into ``(ids, targets, encodings)`` tensors; targets -100 where untrained."""
    encoded = [encode_episode(tokenizer, e, encoding_width, rng) for e in episodes]
    length = min(max(len(ids) for ids, _, _ in encoded), max_positions)
    ids = torch.full((len(encoded), length), tokenizer.pad_id, dtype=torch.long)
    targets = torch.full((len(encoded), length), -100, dtype=torch.long)
    rows = []
    for row, (episode_ids, trained, encodings) in enumerate(encoded):
        episode_ids, trained = episode_ids[:length], trained[:length]
        ids[row, :len(episode_ids)] = torch.tensor(episode_ids)
        # position i predicts token i+1
        for position in range(len(episode_ids) - 1):
            if trained[position + 1]:
                targets[row, position] = episode_ids[position + 1]
        kept = sum(1 for i in episode_ids if i == tokenizer[EMBEDDING])
        rows.append(torch.from_numpy(encodings[:kept]))
    encodings = torch.cat(rows) if rows else None
    return ids, targets, encodings if encodings is not None and len(encodings) else None


def warmup_cosine(step: int, warmup: int, length: int, peak: float, floor: float) -> float:
    """Learning rate at ``step`` of a schedule of ``length`` steps: linear warm-up over
    ``warmup`` steps to ``peak``, then cosine decay to ``floor`` at ``length`` (and
    ``floor`` after it)."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min((step - warmup) / max(1, length - warmup), 1.0)
    return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def learning_rate(config: TrainConfig, step: int) -> float:
    """Warm-up then cosine decay to 10% of the peak."""
    return warmup_cosine(step, config.warmup_steps, config.steps, config.learning_rate,
                         0.1 * config.learning_rate)


class Trainer:
    """Code-only trainer with exact checkpoint/resume.

    Args:
        config: Training settings.
        tokenizer: The tokenizer (its bytes are stored in every checkpoint).
        source: Draws training episodes.
        model_overrides: Overrides of the preset's model config.
    """

    def __init__(self, config: TrainConfig, tokenizer: Tokenizer, source: EpisodeSource,
                 **model_overrides):
        self.config = config
        self.tokenizer = tokenizer
        self.source = source
        torch.manual_seed(config.seed)
        model_config = AgentConfig.preset(config.preset, len(tokenizer),
                                          encoding_width=config.encoding_width, **model_overrides)
        self.model = AgentModel(model_config, embedding_token_id=tokenizer[EMBEDDING],
                                mod_token_id=tokenizer[MOD]).to(config.device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.learning_rate,
                                           weight_decay=config.weight_decay, betas=(0.9, 0.98))
        self.step = 0
        self.history: list[dict] = []

    def train_step(self) -> float:
        """One optimizer step; returns the loss."""
        config = self.config
        rng = np.random.default_rng([config.seed, self.step])
        episodes = self.source(rng, config.batch_size)
        ids, targets, encodings = make_batch(self.tokenizer, episodes, config.encoding_width, rng,
                                             self.model.config.max_positions)
        ids, targets = ids.to(config.device), targets.to(config.device)
        if encodings is not None:
            encodings = encodings.to(config.device)
        for group in self.optimizer.param_groups:
            group['lr'] = learning_rate(config, self.step)
        self.model.train()
        logits, _, _ = self.model(ids, encodings)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                                                 targets.reshape(-1), ignore_index=-100)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.step += 1
        return loss.item()

    def train(self, until: int | None = None, checkpoint: Path | None = None,
              log: Callable[[str], None] = print) -> None:
        """Train to step ``until`` (default: the configured total), checkpointing on the way."""
        until = self.config.steps if until is None else until
        started, losses = time.perf_counter(), []
        while self.step < until:
            losses.append(self.train_step())
            if self.step % self.config.log_every == 0 or self.step == until:
                elapsed = time.perf_counter() - started
                entry = {'step': self.step, 'loss': float(np.mean(losses)), 'seconds': elapsed}
                self.history.append(entry)
                log(f'step {self.step}/{self.config.steps}  loss {entry["loss"]:.4f}  '
                    f'{elapsed:.0f} s')
                losses = []
            if checkpoint is not None and (self.step % self.config.checkpoint_every == 0
                                           or self.step == until):
                self.save(checkpoint)

    def state(self) -> dict:
        """Everything needed to resume exactly, plus the self-describing model checkpoint."""
        checkpoint = self.model.checkpoint(self.tokenizer.model_bytes)
        checkpoint['training'] = {
            'config': dataclasses.asdict(self.config), 'step': self.step,
            'optimizer': self.optimizer.state_dict(), 'torch_rng': torch.get_rng_state(),
            'history': self.history}
        return checkpoint

    def save(self, path: Path | str) -> None:
        """Write a resumable checkpoint atomically (also loadable by :meth:`Agent.load`)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + '.tmp')
        torch.save(self.state(), temporary)
        temporary.replace(path)

    @classmethod
    def resume(cls, path: Path | str, source: EpisodeSource, device: str | None = None,
               steps: int | None = None) -> 'Trainer':
        """A trainer restored from a checkpoint written by :meth:`save`.

        Args:
            path: The checkpoint.
            source: The episode source (the same as the original run's for exact resumption).
            device: Overrides the device it was trained on.
            steps: Overrides the total number of steps (to train further).
        """
        checkpoint = torch.load(path, map_location='cpu', weights_only=False)
        training = checkpoint['training']
        config = TrainConfig(**training['config'])
        if device is not None:
            config.device = device
        if steps is not None:
            config.steps = steps
        trainer = cls.__new__(cls)
        trainer.config = config
        trainer.tokenizer = Tokenizer(checkpoint['tokenizer'])
        trainer.source = source
        trainer.model = AgentModel.from_checkpoint(checkpoint).to(config.device)
        trainer.optimizer = torch.optim.AdamW(trainer.model.parameters(), lr=config.learning_rate,
                                              weight_decay=config.weight_decay, betas=(0.9, 0.98))
        trainer.optimizer.load_state_dict(training['optimizer'])
        torch.set_rng_state(training['torch_rng'])
        trainer.step = training['step']
        trainer.history = list(training['history'])
        return trainer
