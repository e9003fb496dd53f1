"""The joint trainer: code-only, joint and code-refresh steps of the language model (and
the vision network) on synthetic episodes, trained to a step with exact checkpoint/resume.

The trainer holds the models, optimizers, step and log, and runs the loop; the pieces live
beside it: the recipe and its schedule (:mod:`vpcli.train.recipe`), code-only episodes and
hard-example mining (:mod:`vpcli.train.episodes`), the joint stage's cases and tasks
(:mod:`vpcli.train.joint_cases`) and teacher-forced episode (:mod:`vpcli.train.joint_episode`),
the loss terms (:mod:`vpcli.train.losses`), the state on disk and the exported weights
(:mod:`vpcli.train.checkpoint`), and the log (:mod:`vpcli.train.run_log`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from vpcli.errors import BadInputError
from vpcli.train.checkpoint import (checkpoint_models, export_weights, read_checkpoint,
                                    save_checkpoint)
from vpcli.train.episodes import (code_episodes, episode_hardness, episode_tensors,
                                  refresh_episodes)
from vpcli.train.joint_cases import synthesise_case, write_extra_targets, write_joint_task
from vpcli.train.joint_episode import joint_episode_loss, score_extra_targets
from vpcli.train.losses import TrainingVision, frozen_copy, refresh_loss, summed_ce
from vpcli.train.recipe import Recipe, agent_learning_rate, stage_at
from vpcli.train.run_log import ProgressBar, log_line, summarise


class JointTrainer:
    """Code-only then joint training, with exact checkpoint/resume.

    Use :meth:`create` for a new run and :meth:`resume` to continue one.
    """

    def __init__(self, recipe: Recipe, tokenizer, agent, vision, device: str = 'cpu'):
        from vpcli.agent.tokenizer import (CODE_START, EMBEDDING, FEEDBACK_END, FEEDBACK_START,
                                           MOD, STEP_END, STOP)
        self.recipe = recipe
        self.tokenizer = tokenizer
        self.agent = agent.to(device)
        self.vision = vision.to(device)
        self.device = device
        self.special = {name: tokenizer[name] for name in
                        (CODE_START, EMBEDDING, FEEDBACK_END, FEEDBACK_START, MOD, STEP_END, STOP)}
        self.agent_optimizer = torch.optim.AdamW(self.agent.parameters(), lr=recipe.learning_rate,
                                                 weight_decay=0.01, betas=(0.9, 0.98))
        self.vision_optimizer = torch.optim.AdamW(self.vision.parameters(),
                                                  lr=recipe.vision_learning_rate, weight_decay=1e-4)
        self.step = 0
        #: steps whose language models this state averages (scripts/average_checkpoints.py);
        #: emptied by the next training step
        self.averaged_steps: list[int] = []
        self.history: list[dict] = []
        self.recipe_changes: list[dict] = []
        self._block: tuple[int, Any] | None = None
        self._info: tuple[Any, Any] | None = None
        self.synthesis_seconds = 0.0
        #: the language model frozen at ``refresh_start`` (φ anchor of the code refresh)
        self.phi_teacher = None

    # ----- construction -------------------------------------------------------------
    @classmethod
    def create(cls, recipe: Recipe, device: str = 'cpu', log: Callable[[str], None] = print) \
            -> 'JointTrainer':
        """A new run: train the tokenizer on the task corpus, initialise both networks."""
        from vpcli.agent.corpus import tokenizer_corpus
        from vpcli.agent.model import AgentConfig, AgentModel
        from vpcli.agent.tokenizer import EMBEDDING, MOD, Tokenizer, train_tokenizer
        from vpcli.vision.config import VisionConfig, named_config
        from vpcli.vision.model import VisionNetwork

        started = time.perf_counter()
        texts = tokenizer_corpus(recipe.seed, recipe.tokenizer_texts)
        import tempfile
        with tempfile.TemporaryDirectory() as folder:
            tokenizer = train_tokenizer(texts, Path(folder) / 'tokenizer.model', recipe.vocab_size,
                                        seed=recipe.seed)
            tokenizer = Tokenizer(tokenizer.model_bytes)
        log(f'tokenizer: {len(tokenizer)} pieces from {len(texts)} texts '
            f'({time.perf_counter() - started:.0f} s)')
        vision_config = named_config(recipe.vision_config)
        vision_config = VisionConfig.from_dict({**vision_config.to_dict(), 'seed': recipe.seed})
        torch.manual_seed(recipe.seed)
        agent_config = AgentConfig.preset(recipe.agent_preset, len(tokenizer),
                                          encoding_width=vision_config.embedding_width)
        agent = AgentModel(agent_config, embedding_token_id=tokenizer[EMBEDDING],
                           mod_token_id=tokenizer[MOD])
        return cls(recipe, tokenizer, agent, VisionNetwork(vision_config), device)

    @classmethod
    def resume(cls, path: Path | str, device: str = 'cpu', recipe: Recipe | None = None,
               change_recipe: bool = False) -> 'JointTrainer':
        """Continue a run from its checkpoint.

        A given recipe may change ``steps``, logging and threads only; everything that shapes
        the data must match, unless ``change_recipe``: then the run continues under the new
        recipe from its current step (recorded in ``recipe_changes``; from there on the run
        is again exactly resumable, but it is no longer the same as one run of either
        recipe). See :func:`vpcli.train.checkpoint.read_checkpoint`.
        """
        checkpoint, saved, changes = read_checkpoint(path, recipe, change_recipe)
        tokenizer, agent, vision = checkpoint_models(checkpoint)
        trainer = cls(saved, tokenizer, agent, vision, device)
        if 'agent_optimizer' in checkpoint:  # a compact state has none: a warm restart
            trainer.agent_optimizer.load_state_dict(checkpoint['agent_optimizer'])
            trainer.vision_optimizer.load_state_dict(checkpoint['vision_optimizer'])
        torch.set_rng_state(checkpoint['torch_rng'])
        trainer.step = checkpoint['step']
        trainer.history = list(checkpoint['history'])
        trainer.recipe_changes = changes
        trainer.averaged_steps = list(checkpoint.get('averaged_steps', []))
        if checkpoint.get('phi_teacher') is not None:
            trainer.phi_teacher = trainer._frozen_copy(checkpoint['phi_teacher'])
        return trainer

    # ----- checkpoints ----------------------------------------------------------------
    def save(self, path: Path | str, compact: bool = False) -> None:
        """Write the resumable checkpoint atomically.

        ``compact``: the state that is committed (``weights/train-state/``): the language
        model, its φ anchor and the vision network in fp16, without optimizer moments
        (about a quarter of the bytes). Resuming from it is a warm restart: fresh moments,
        weights rounded to fp16.
        """
        save_checkpoint(path, recipe=self.recipe, step=self.step, agent=self.agent,
                        tokenizer=self.tokenizer, vision=self.vision, history=self.history,
                        recipe_changes=self.recipe_changes, phi_teacher=self.phi_teacher,
                        agent_optimizer=self.agent_optimizer,
                        vision_optimizer=self.vision_optimizer, compact=compact,
                        averaged_steps=self.averaged_steps)

    # ----- learning rates ---------------------------------------------------------------
    def stage(self, step: int | None = None) -> str:
        """``code``, ``joint`` or ``refresh`` (the code refresh) for a step (default: the next)."""
        return stage_at(self.recipe, self.step if step is None else step)

    def _frozen_copy(self, state: dict):
        """The language model with ``state``, frozen (the refresh's φ anchor)."""
        return frozen_copy(self.agent, state, self.device)

    def _set_learning_rates(self) -> None:
        rate = agent_learning_rate(self.recipe, self.step)
        for group in self.agent_optimizer.param_groups:
            group['lr'] = rate
        for group in self.vision_optimizer.param_groups:
            group['lr'] = self.recipe.vision_learning_rate

    # ----- code-only episodes -----------------------------------------------------------
    def _code_episodes(self, rng: np.random.Generator, count: int, focus: int = 0) -> list:
        """``count`` code-only episodes, ``focus`` of them from the recipe's ``refresh_focus``
        categories."""
        return code_episodes(self.recipe, rng, count, focus)

    def _tensors(self, episodes: list, rng: np.random.Generator):
        """``(ids, targets, encodings)`` of episodes on the training device."""
        return episode_tensors(self.tokenizer, self.agent, episodes, rng, self.device)

    def _code_batch(self, rng: np.random.Generator, count: int, focus: int = 0):
        """``(ids, targets, encodings)`` of ``count`` code-only episodes, ``focus`` of them
        from the recipe's ``refresh_focus`` categories."""
        return self._tensors(self._code_episodes(rng, count, focus), rng)

    def hardness(self, episodes: list, rng: np.random.Generator, chunk: int = 16) -> list[float]:
        """Per episode, the highest cross-entropy of any one trained token under teacher
        forcing, by the language model as it is now (no gradient; see
        :func:`vpcli.train.episodes.episode_hardness`)."""
        return episode_hardness(self.agent, self.tokenizer, episodes, rng, self.device, chunk)

    def _refresh_episodes(self, rng: np.random.Generator) -> tuple[list, list[float] | None]:
        """A refresh batch's episodes (the mined hard rows first, then the drawn ones) and
        the mined pool's hardness (None without mining)."""
        return refresh_episodes(self.recipe, self.step, rng, self.agent, self.tokenizer,
                                self.device)

    # ----- losses -----------------------------------------------------------------------
    def _code_loss(self, rng: np.random.Generator, count: int) -> tuple[torch.Tensor, int]:
        """Summed token cross-entropy of ``count`` code-only episodes, and the token count."""
        ids, targets, encodings = self._code_batch(rng, count)
        logits, _, _ = self.agent(ids, encodings)
        return summed_ce(logits, targets), int((targets != -100).sum())

    def _refresh_loss(self, rng: np.random.Generator) -> tuple[torch.Tensor, dict]:
        """Loss of a code refresh step: mean token cross-entropy + the φ anchor (made from
        the model as it is at ``refresh_start``)."""
        from vpcli.agent.tokenizer import MOD
        recipe = self.recipe
        if self.phi_teacher is None:
            if self.step != recipe.refresh_start:
                raise BadInputError(f'step {self.step} is inside the code refresh but the '
                                    f'checkpoint holds no φ anchor (the refresh must start at '
                                    f'step {recipe.refresh_start})')
            self.phi_teacher = self._frozen_copy(self.agent.state_dict())
        episodes, mined = self._refresh_episodes(rng)
        ids, targets, encodings = self._tensors(episodes, rng)
        return refresh_loss(self.agent, self.phi_teacher, ids, targets, encodings,
                            self.special[MOD], recipe.phi_anchor_weight, mined, self.device)

    # ----- the joint stage's cases and episodes -----------------------------------------
    def _case(self, block: int):
        """The synthesised case of a joint block (made once, kept while the block lasts)."""
        if self._block is not None and self._block[0] == block:
            return self._block[1]
        started = time.perf_counter()
        plan, world = synthesise_case(self.recipe, block)
        self.synthesis_seconds += time.perf_counter() - started
        self._block = (block, (plan, world))
        return plan, world

    def _case_info(self, world):
        """``world.case_info()``, computed once per case."""
        if self._info is None or self._info[0] is not world:
            self._info = (world, world.case_info())
        return self._info[1]

    def _joint_task(self, rng: np.random.Generator):
        """A task written for the current block's case (same case kind as its first plan):
        ``(draft, world)``, the draft None when none could be written."""
        block = (self.step - self.recipe.code_steps) // self.recipe.tasks_per_case
        first_plan, world = self._case(block)
        return write_joint_task(rng, first_plan, self._case_info(world)), world

    def _extra_targets(self, rng: np.random.Generator, world) -> list[tuple[str, str]]:
        """``targets_per_encode`` (prompt, target) pairs of segmentation tasks written for
        the case (held-out prompts skipped)."""
        return write_extra_targets(rng, self._case_info(world), self.recipe.targets_per_encode)

    def _extra_segments(self, extras, anchor, lines, scorer: TrainingVision) -> None:
        """Score each extra target on the anchor encoding; φ from the language model reading
        the target's prompt, the anchor's encode step and feedback, up to the ``<MOD>``."""
        score_extra_targets(self.agent, self.tokenizer, self.special, extras, anchor, lines,
                            scorer, self.device)

    def _joint_loss(self, draft, world, extras=(), lines=None) -> tuple[torch.Tensor, int, TrainingVision]:
        """Teacher-forced episode of ``draft`` on its synthesised case: summed CE, tokens,
        and the vision scorer (holding the Dice losses). ``extras`` are (prompt, target)
        pairs scored on the episode's first encoding (:meth:`_extra_segments`); ``lines``
        the state's scan lines (default: the case's scans described)."""
        return joint_episode_loss(self.agent, self.vision, self.tokenizer, self.special, draft,
                                  world, extras, lines, self.device)

    # ----- one step ---------------------------------------------------------------------
    def train_step(self) -> dict:
        """One optimizer step; returns its numbers (loss, ce, dice, category)."""
        from vpcli.agent.corpus import scan_lines

        recipe = self.recipe
        rng = np.random.default_rng([recipe.seed, self.step])
        self._set_learning_rates()
        self.agent.train()
        stage = self.stage()
        joint = stage == 'joint'
        self.vision.train(joint)
        numbers: dict[str, Any] = {'step': self.step + 1, 'stage': stage}
        if stage == 'refresh':
            loss, parts = self._refresh_loss(rng)
            numbers.update(parts)
        elif not joint:
            ce_sum, tokens = self._code_loss(rng, recipe.batch_size)
            loss = ce_sum / max(tokens, 1)
            numbers['ce'] = float(loss.detach())
        else:
            draft, world = self._joint_task(rng)
            ce_sum, tokens = self._code_loss(rng, recipe.joint_code_batch) \
                if recipe.joint_code_batch else (torch.zeros((), device=self.device), 0)
            dice = torch.zeros((), device=self.device)
            if draft is not None:
                extras = self._extra_targets(rng, world) if recipe.targets_per_encode else ()
                lines = scan_lines(world.case, rng, recipe.unknown_metadata)  # no draw at 0
                task_ce, task_tokens, scorer = self._joint_loss(draft, world, extras, lines)
                ce_sum, tokens = ce_sum + task_ce, tokens + task_tokens
                if scorer.losses:
                    dice = torch.stack(scorer.losses).mean()
                    numbers['dice'] = float(np.mean(scorer.hard_dice))
                    numbers['segments'] = len(scorer.losses)
                numbers['category'] = draft.category
            ce = ce_sum / max(tokens, 1)
            loss = ce + recipe.dice_weight * dice
            numbers['ce'], numbers['dice_loss'] = float(ce.detach()), float(dice.detach())
        self.agent_optimizer.zero_grad(set_to_none=True)
        self.vision_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.agent.parameters(), 1.0)
        self.agent_optimizer.step()
        if joint:
            torch.nn.utils.clip_grad_norm_(self.vision.parameters(), 1.0)
            self.vision_optimizer.step()
        self.step += 1
        self.averaged_steps = []
        numbers['loss'] = float(loss.detach())
        return numbers

    def train(self, until: int, checkpoint: Path | None = None,
              log: Callable[[str], None] = print, progress: bool = False) -> None:
        """Train to step ``until``, checkpointing every ``checkpoint_every`` steps and at the end."""
        recipe = self.recipe
        window: list[dict] = []
        started, last = time.perf_counter(), time.perf_counter()
        last_cpu = time.process_time()
        bar = ProgressBar(until, self.step) if progress else None
        try:
            while self.step < until:
                numbers = self.train_step()
                window.append(numbers)
                if bar:
                    bar.advance(numbers)
                if self.step % recipe.log_every == 0 or self.step == until:
                    now = time.perf_counter()
                    entry = summarise(window, self.step, now - last)
                    entry['elapsed_s'] = round(now - started, 1)
                    cpu = time.process_time()
                    entry['cpu_s'] = round(cpu - last_cpu, 2)  # process CPU time, all threads
                    last_cpu = cpu
                    self.history.append(entry)
                    log(log_line(entry, until))
                    window, last = [], now
                if checkpoint is not None and (self.step % recipe.checkpoint_every == 0
                                               or self.step == until):
                    self.save(checkpoint)
        finally:
            if bar:
                bar.stop()

    # ----- export -----------------------------------------------------------------------
    def export(self, folder: Path | str, evaluation: dict | None = None,
               recipe_path: str | None = None) -> dict:
        """Write a weights folder: agent, vision network, tokenizer, manifest.

        The checkpoint's training state stays behind; the models are stored as they are
        (fp32: both are a few MB, and fp16 would change greedy decoding).
        """
        return export_weights(folder, agent=self.agent, tokenizer=self.tokenizer,
                              vision=self.vision, recipe=self.recipe, step=self.step,
                              history=self.history, recipe_changes=self.recipe_changes,
                              evaluation=evaluation, recipe_path=recipe_path,
                              averaged_steps=self.averaged_steps)
