"""The dense vision stage: every voxel and every target of each synthesised sample supervised.

Each step synthesises a batch on the training device (:mod:`vpcli.synth.dense`) and scores
the network's dense output (:meth:`VisionNetwork.dense_logits`) on

* the **finest partition**: cross-entropy plus soft Dice over background and every label;
* **every composite target** of the task world (hemispheres, lobes' cortex, white matter,
  ventricles, whole brain, ...) as the union of its parts: the soft Dice of all of them
  comes from one ``(K, K)`` soft confusion matrix (``C[k, j]`` = summed probability of
  label k over the voxels of true label j), since a union's overlap and size are sums
  over its parts;
* the **lesion classes**: binary cross-entropy (the mean over lesion voxels weighted
  :data:`POSITIVE_LESION_WEIGHT` beside the mean over the rest) plus soft Dice per channel.

Composite targets that also hold white matter by nearest parcel (lobes, territories) are
scored on their cortical parts.

Checkpoints (``{'recipe', 'config', 'state', 'optimizer', 'step', 'generator', ...}``) resume
exactly on the same device; :meth:`DenseTrainer.compact` writes the fp16 weights-only state
that is committed (a warm restart: the optimizer moments start again).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
import tomllib
from pathlib import Path
from typing import Callable

import torch
from torch.nn import functional as F

from vpcli.errors import BadInputError
from vpcli.weights import MANIFEST, half_state, sha256_file


@dataclasses.dataclass
class DenseRecipe:
    """Settings of a dense vision run (``recipes/train/dense-*.toml``, ``stage = "vision"``).

    Attributes:
        name: Recipe name.
        stage: Always ``vision``.
        description: One line.
        vision_config: Named base config (:data:`vpcli.vision.config.CONFIGS`).
        seed: Seed of the synthesis generator and of the weights.
        steps: Total steps.
        batch_size: Samples per step.
        shape: Training grid (voxels), each a multiple of ``2 ** (levels - 1)``.
        spacing_mm: Training grid spacing (the config's working resolution).
        learning_rate: AdamW peak rate (warm-up, then cosine to a tenth).
        warmup_steps: Linear warm-up.
        weight_decay: AdamW weight decay.
        composite_weight: Weight of the composite-target Dice.
        partition_dice_weight: Weight of the soft Dice over the finest partition (beside its
            cross-entropy, weight 1). Soft Dice can over-segment small, uncertain structures;
            cross-entropy does not (docs/training.md gives the measurement).
        lesion_weight: Weight of the lesion terms.
        lesion_probability: Share of samples with lesions.
        checkpoint_every: Steps between checkpoints.
        log_every: Steps between log lines.
        threads: Torch CPU threads (0: torch's default).
        sources: Training anatomy sources (``fsaverage``, ``gca``, ``colin27``).
        gca_draws: Label maps drawn from the GCA priors when ``gca`` is a source.
        structure_scaling: Grow or shrink a few deep grey structures, ventricles or the
            brainstem of each sample on their own, each by a linear factor up to
            ``exp(±structure_scaling)`` at its centre (:mod:`vpcli.synth.dense`); 0: off.
        calibration_samples: At export, fit the volume calibration (one logit offset per
            anatomical channel, :mod:`vpcli.vision.calibration`) on this many new synthetic
            samples and ship it in the network's config; 0 ships none. Training is
            unaffected.
        lesion_positive_weight: Weight of the mean lesion-channel cross-entropy over the
            lesion voxels, added to the mean over the other voxels (0: one mean over all
            voxels, each lesion voxel weighted ``lesion_voxel_weight``).
        lesion_voxel_weight: With ``lesion_positive_weight = 0``: the weight of each lesion
            voxel in the cross-entropy (``pos_weight``), against 1 for the others.
        lesion_head_width: Give the network a lesion head of this width
            (:class:`~vpcli.vision.layers.LesionHead`); 0: none.
        train: ``all`` (every weight) or ``lesion_head`` (the lesion head alone; the trunk
            and the anatomical channels stay as they are).
        schedule_start: Step at which this recipe's warm-up and cosine begin (a stage that
            resumes a run trained under another recipe).
        precision: ``auto``: the network's forward pass under bf16 autocast on CUDA and on
            CPUs with bf16 matrix units (Intel AMX), where a CPU step took 0.77-0.87 times
            as long as in fp32 (docs/vision.md "Efficiency benchmark",
            ``docs/benchmarks/dense-training-precision-cpu.json``); the loss is always fp32.
            ``fp32``: never.
    """
    name: str = 'dense-cpu'
    stage: str = 'vision'
    description: str = ''
    vision_config: str = 'dense-cpu'
    seed: int = 0
    steps: int = 100000
    batch_size: int = 2
    shape: list = dataclasses.field(default_factory=lambda: [48, 48, 48])
    spacing_mm: float = 2.0
    learning_rate: float = 2e-3
    warmup_steps: int = 50
    weight_decay: float = 1e-5
    composite_weight: float = 1.0
    partition_dice_weight: float = 1.0
    lesion_weight: float = 0.5
    lesion_probability: float = 0.5
    checkpoint_every: int = 100
    log_every: int = 10
    threads: int = 0
    sources: list = dataclasses.field(default_factory=lambda: ['fsaverage'])
    gca_draws: int = 6
    structure_scaling: float = 0.0
    calibration_samples: int = 0
    lesion_positive_weight: float = 0.2
    lesion_voxel_weight: float = 1.0
    lesion_head_width: int = 0
    train: str = 'all'
    schedule_start: int = 0
    precision: str = 'auto'

    def __post_init__(self) -> None:
        if self.precision not in ('auto', 'fp32'):
            raise BadInputError(f'recipe {self.name}: precision = {self.precision!r}; expected '
                                f'"auto" or "fp32"')
        if self.train not in ('all', 'lesion_head'):
            raise BadInputError(f'recipe {self.name}: train = {self.train!r}; expected "all" '
                                f'or "lesion_head"')
        if self.train == 'lesion_head' and not self.lesion_head_width:
            raise BadInputError(f'recipe {self.name}: train = "lesion_head" needs a '
                                f'lesion_head_width')

    @classmethod
    def load(cls, path: Path | str) -> 'DenseRecipe':
        """Read a recipe file (unknown keys are an error naming the file)."""
        from vpcli.train import read_recipe_file
        data = read_recipe_file(path, cls)
        if data.get('stage') != 'vision':
            raise BadInputError(f'{path}: not a dense vision recipe (stage = "vision")')
        return cls(**data)


def recipe_stage(path: Path) -> str | None:
    """The ``stage`` key of a recipe file (None when it has none or cannot be read)."""
    try:
        return tomllib.loads(Path(path).read_text()).get('stage')
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return None


def dense_config(recipe: DenseRecipe):
    """The recipe's vision config with the vocabulary's labels, lesion classes and targets."""
    from vpcli.synth.vocabulary import load_vocabulary
    from vpcli.tasks.ontology import load_ontology
    from vpcli.vision.config import named_config
    vocabulary = load_vocabulary()
    names = [vocabulary.name(i) for i in vocabulary.ids]
    lesions = load_ontology().leaf_classes()
    return dataclasses.replace(named_config(recipe.vision_config), label_ids=tuple(vocabulary.ids),
                               label_names=tuple(names), lesion_classes=tuple(lesions),
                               min_spacing_mm=recipe.spacing_mm, seed=recipe.seed,
                               lesion_head_width=recipe.lesion_head_width)


def bf16_autocast_helps(device: str) -> bool:
    """Whether bf16 autocast speeds up the dense network on ``device``: on CUDA, and on
    CPUs with bf16 matrix units (Intel AMX tiles), where oneDNN runs bf16 convolutions on
    them; elsewhere bf16 convolutions are emulated and slower than fp32."""
    kind = torch.device(device).type
    if kind == 'cuda':
        return True
    if kind == 'cpu':
        check = getattr(torch.cpu, '_is_amx_tile_supported', None)
        return bool(check is not None and check())
    return False


def composite_matrix(config) -> torch.Tensor:
    """``(K, T)`` membership of the finest classes (background first) in every anatomical
    target with at least two parts (single-label targets are scored by the partition)."""
    from vpcli.tasks.ontology import load_ontology
    from vpcli.vision.targets import anatomy_parts
    classes = config.anatomy_channels
    columns = []
    for target in load_ontology().targets.values():
        parts = anatomy_parts(target, config.label_names).labels
        if len(parts) >= 2:
            column = torch.zeros(classes)
            column[list(parts)] = 1
            columns.append(column)
    unique = torch.unique(torch.stack(columns, dim=1), dim=1)
    return unique


#: default weight of the mean cross-entropy over lesion voxels, beside the mean over the
#: others (recipes set it as ``lesion_positive_weight``)
POSITIVE_LESION_WEIGHT = 0.2


def dense_loss(logits: torch.Tensor, labels: torch.Tensor, lesions: torch.Tensor,
               composites: torch.Tensor, composite_weight: float = 1.0,
               lesion_weight: float = 0.5,
               partition_dice_weight: float = 1.0,
               positive_weight: float = POSITIVE_LESION_WEIGHT,
               voxel_weight: float = 1.0,
               groups: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """Loss of one batch and its parts (see the module docstring).

    Args:
        logits: ``(B, K + L, X, Y, Z)`` head output (K anatomical classes incl. background),
            or the pair ``(anatomy, lesions)`` of :meth:`VisionNetwork.dense_logits_split`.
        labels: ``(B, X, Y, Z)`` true class indices; ``K + g`` for a partially labelled
            voxel that is one of the classes of ``groups[g]``.
        lesions: ``(B, L, X, Y, Z)`` true lesion masks.
        composites: ``(K, T)`` membership matrix of composite targets.
        groups: ``(G, K)`` bool membership of the partial labels, or None.

    A partially labelled voxel adds minus the log of its group's total probability to the
    cross-entropy (the marginal likelihood of what is known), and counts in a Dice term
    only where the truth is known: as a true voxel of a target that holds its whole group,
    as a false one of a target that holds none of it, and not at all otherwise.
    """
    classes = composites.shape[0]
    if isinstance(logits, tuple):  # VisionNetwork.dense_logits_split
        anatomy, lesion_logits = logits[0].float(), logits[1].float()
    else:
        anatomy, lesion_logits = logits[:, :classes].float(), logits[:, classes:].float()
    # one log-softmax serves both terms (a separate softmax and its backward cost about a
    # tenth of a CPU step at 48^3 voxels and 107 classes)
    log_probabilities = anatomy.log_softmax(1)
    partial = labels >= classes
    if groups is None or not bool(partial.any()):
        cross_entropy = F.nll_loss(log_probabilities, labels.clamp(max=classes - 1))
        groups = None
    else:
        exact_nll = -log_probabilities.gather(1, labels.clamp(max=classes - 1).unsqueeze(1))[:, 0]
        voxel_lp = log_probabilities.movedim(1, -1)[partial]  # (M, K)
        outside = ~groups[labels[partial] - classes]  # (M, K): classes not in the group
        group_nll = -torch.logsumexp(voxel_lp.masked_fill(outside, float('-inf')), dim=1)
        cross_entropy = (exact_nll[~partial].sum() + group_nll.sum()) / labels.numel()
    probabilities = log_probabilities.exp()
    batch = labels.shape[0]
    flat_p = probabilities.flatten(2)  # (B, K, N)
    flat_t = labels.flatten(1)  # (B, N)
    # truth columns: the K classes, then the G groups; member[j, k]: truth j may be class k
    member = torch.eye(classes, device=anatomy.device, dtype=flat_p.dtype)
    if groups is not None:
        member = torch.cat([member, groups.to(flat_p.dtype)])
    columns = member.shape[0]
    # soft confusion: C[b, k, j] = sum of p_k over the voxels whose truth is j
    confusion = torch.zeros(batch, classes, columns, device=anatomy.device, dtype=flat_p.dtype)
    confusion.scatter_add_(2, flat_t.unsqueeze(1).expand(-1, classes, -1), flat_p)
    counts = confusion.sum(1)  # (B, J): voxels per truth column
    true = counts[:, :classes]  # (B, K): voxel count per true class
    # a class's predicted voxels, over the truths known to be or not be it
    known = (member.t() == 0).to(flat_p.dtype)  # (K, J): truth j is surely not class k
    known[:, :classes] = 1
    predicted = (confusion * known).sum(2)  # (B, K)
    overlap = torch.diagonal(confusion[:, :, :classes], dim1=1, dim2=2)
    present = true > 0
    dice = (2 * overlap + 1) / (predicted + true + 1)
    partition_dice = 1 - dice[present].mean()
    # composites: truth j lies inside T (all its classes in T) or outside (none); otherwise
    # it is unknown and left out. overlap_T = m_T^T C inside_T, predicted m_T^T C known_T
    m = composites.to(flat_p.dtype)
    in_t = member @ m  # (J, T): how many of truth j's classes T holds
    inside = (in_t == member.sum(1, keepdim=True)).to(flat_p.dtype)
    decided = inside + (in_t == 0).to(flat_p.dtype)
    union_overlap = torch.einsum('kt,bkj,jt->bt', m, confusion, inside)
    union_predicted = torch.einsum('kt,bkj,jt->bt', m, confusion, decided)
    union_true = counts @ inside
    union_present = union_true > 0
    union_dice = (2 * union_overlap + 1) / (union_predicted + union_true + 1)
    composite_dice = 1 - union_dice[union_present].mean() if bool(union_present.any()) \
        else anatomy.new_zeros(())
    loss = cross_entropy + partition_dice_weight * partition_dice + composite_weight * composite_dice
    parts = {'ce': float(cross_entropy.detach()), 'dice': float(1 - partition_dice.detach()),
             'composite_dice': float(1 - composite_dice.detach())}
    if lesion_logits.shape[1]:
        # lesion voxels are a few in ten thousand: a plain mean would let the negatives push
        # every logit so low that the Dice term's gradient vanishes through the sigmoid, so
        # the positives' mean cross-entropy is added with its own weight
        positive = lesions > 0.5
        if positive_weight:
            per_voxel = F.binary_cross_entropy_with_logits(lesion_logits, lesions, reduction='none')
            bce = per_voxel[~positive].mean()
            if bool(positive.any()):
                bce = bce + positive_weight * per_voxel[positive].mean()
        else:
            # one mean, lesion voxels weighted a fixed few times: where the network cannot
            # tell, the best answer is about that many times the local lesion rate, far under
            # 0.5 (the positive-mean term above weighs them hundreds of times and hedges)
            bce = F.binary_cross_entropy_with_logits(
                lesion_logits, lesions, pos_weight=lesion_logits.new_tensor(voxel_weight))
        lesion_p = torch.sigmoid(lesion_logits).flatten(2)
        lesion_t = lesions.flatten(2)
        lesion_present = lesion_t.sum(2) > 0
        lesion_dice = (2 * (lesion_p * lesion_t).sum(2) + 1) / (lesion_p.sum(2) + lesion_t.sum(2) + 1)
        lesion_dice_loss = 1 - lesion_dice[lesion_present].mean() if bool(lesion_present.any()) \
            else anatomy.new_zeros(())
        loss = loss + lesion_weight * (bce + lesion_dice_loss)
        parts['lesion_bce'] = float(bce.detach())
        if bool(lesion_present.any()):
            parts['lesion_dice'] = float(1 - lesion_dice_loss.detach())
    return loss, parts


class DenseTrainer:
    """Trains a dense vision network on synthesis made on its own device.

    Args:
        recipe: The run's settings.
        network: A dense :class:`VisionNetwork` (on ``device``).
        device: Training device.
    """

    def __init__(self, recipe: DenseRecipe, network, device: str = 'cpu') -> None:
        from vpcli.synth.dense import SynthesisSettings
        self.recipe = recipe
        self.network = network.to(device)
        self.device = device
        settings = SynthesisSettings(spacing_mm=recipe.spacing_mm, shape=tuple(recipe.shape),
                                     lesion_probability=recipe.lesion_probability,
                                     gca_draws=recipe.gca_draws,
                                     structure_scaling=recipe.structure_scaling)
        levels = network.config.levels
        if any(n % 2 ** (levels - 1) for n in recipe.shape):
            raise BadInputError(f'recipe {recipe.name}: shape {recipe.shape} must be multiples of '
                                f'{2 ** (levels - 1)} for a {levels}-level network')
        self._settings = settings
        #: built on first use (its sources take minutes to draw; exporting needs none)
        self._synthesizer = None  # a DenseSynthesizer
        #: generator state to start the synthesiser from (a resumed run's), else None
        self._generator_state: torch.Tensor | None = None
        self.composites = composite_matrix(network.config).to(device)
        if recipe.train == 'lesion_head':
            if network.lesion_head is None:
                raise BadInputError(f'recipe {recipe.name}: the network has no lesion head')
            trained = list(network.lesion_head.parameters())
        else:
            trained = list(network.parameters())
        self.optimizer = torch.optim.AdamW(trained, lr=recipe.learning_rate,
                                           weight_decay=recipe.weight_decay)
        self.step = 0
        self.seconds = 0.0
        self.synthesis_seconds = 0.0
        self.history: list[dict] = []
        #: ``{'step', 'changed': {key: [old, new]}}`` per resume under a changed recipe
        self.recipe_changes: list[dict] = []
        #: steps whose weights were averaged into these (scripts/average_checkpoints.py)
        self.averaged_steps: list[int] = []

    @property
    def synthesizer(self):
        """The run's :class:`~vpcli.synth.dense.DenseSynthesizer` (made on first use)."""
        if self._synthesizer is None:
            from vpcli.synth.dense import DenseSynthesizer
            config = self.network.config
            self._synthesizer = DenseSynthesizer(config.label_ids, config.lesion_classes,
                                                 self.device, self._settings, self.recipe.sources,
                                                 seed=self.recipe.seed)
            if self._generator_state is not None:
                self._synthesizer.generator.set_state(self._generator_state)
        return self._synthesizer

    def _generator_state_now(self) -> torch.Tensor:
        """The synthesiser generator's state, without making the synthesiser."""
        if self._synthesizer is not None:
            return self._synthesizer.generator.get_state()
        if self._generator_state is not None:
            return self._generator_state
        return torch.Generator().manual_seed(self.recipe.seed).get_state()

    @classmethod
    def create(cls, recipe: DenseRecipe, device: str = 'cpu') -> 'DenseTrainer':
        """A new run: a freshly initialised dense network."""
        from vpcli.vision.model import VisionNetwork
        return cls(recipe, VisionNetwork(dense_config(recipe)), device)

    @classmethod
    def resume(cls, path: Path | str, device: str = 'cpu',
               recipe: DenseRecipe | None = None) -> 'DenseTrainer':
        """Continue from a checkpoint: exactly from a full one (optimizer and generator
        state), as a warm restart from a compact one (fp16 weights, fresh optimizer)."""
        from vpcli.vision.config import VisionConfig
        from vpcli.vision.model import VisionNetwork
        data = torch.load(path, map_location='cpu', weights_only=True)
        # checkpoints written before the recipe had ``precision`` trained in fp32
        saved_recipe = DenseRecipe(**{'precision': 'fp32', **data['recipe']})
        config = VisionConfig.from_dict(data['config'])
        state = {k: v.float() for k, v in data['state'].items()}
        new_head = recipe is not None and recipe.lesion_head_width != config.lesion_head_width
        if new_head:
            # a lesion head added (or resized) for a new stage: it starts fresh, every
            # other weight as saved
            config = dataclasses.replace(config, lesion_head_width=recipe.lesion_head_width)
            state = {k: v for k, v in state.items() if not k.startswith('lesion_head.')}
        network = VisionNetwork(config)
        missing, unexpected = network.load_state_dict(state, strict=not new_head)
        if unexpected or any(not k.startswith('lesion_head.') for k in missing):
            raise BadInputError(f'{path}: checkpoint does not match the network '
                                f'(missing {missing[:3]}, unexpected {unexpected[:3]})')
        trainer = cls(recipe or saved_recipe, network, device)
        trainer.step = int(data['step'])
        trainer.recipe_changes = list(data.get('recipe_changes', []))
        if recipe is not None:
            old, new = dataclasses.asdict(saved_recipe), dataclasses.asdict(recipe)
            changed = {key: [old[key], new[key]] for key in new
                       if key not in ('threads', 'log_every', 'checkpoint_every') and old.get(key) != new[key]}
            if changed:
                trainer.recipe_changes.append({'step': trainer.step, 'changed': changed})
        trainer.averaged_steps = list(data.get('averaged_steps', []))
        trainer.seconds = float(data.get('seconds', 0.0))
        trainer.synthesis_seconds = float(data.get('synthesis_seconds', 0.0))
        if 'optimizer' in data and not new_head and saved_recipe.train == trainer.recipe.train:
            trainer.optimizer.load_state_dict(data['optimizer'])
        if 'generator' in data and torch.device(device).type == 'cpu':
            trainer._generator_state = data['generator']
        elif torch.device(device).type == 'cpu':  # a warm restart: new draws, seeded by the step
            seed = trainer.recipe.seed * 1_000_003 + trainer.step
            trainer._generator_state = torch.Generator().manual_seed(seed).get_state()
        else:
            trainer.synthesizer.generator.manual_seed(trainer.recipe.seed * 1_000_003 + trainer.step)
        return trainer

    def save(self, path: Path | str, compact: bool = False) -> Path:
        """Write a checkpoint atomically; ``compact``: fp16 weights only (what is committed)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        state = self.network.state_dict()
        state = half_state(state) if compact else {k: v.detach().cpu() for k, v in state.items()}
        data = {'recipe': dataclasses.asdict(self.recipe), 'config': self.network.config.to_dict(),
                'state': state, 'step': self.step, 'seconds': self.seconds,
                'synthesis_seconds': self.synthesis_seconds, 'recipe_changes': self.recipe_changes,
                'averaged_steps': self.averaged_steps}
        if not compact:
            data['optimizer'] = self.optimizer.state_dict()
            if torch.device(self.device).type == 'cpu':
                data['generator'] = self._generator_state_now()
        temporary = path.with_name(f'.{path.name}.tmp')
        torch.save(data, temporary)
        os.replace(temporary, path)
        return path

    @property
    def autocast(self) -> bool:
        """Whether the forward pass runs under bf16 autocast (the recipe's ``precision``)."""
        return self.recipe.precision == 'auto' and bf16_autocast_helps(self.device)

    def learning_rate(self) -> float:
        """Warm-up then cosine decay to a tenth of the peak over the recipe's steps."""
        recipe = self.recipe
        step, steps = self.step - recipe.schedule_start, recipe.steps - recipe.schedule_start
        if step < recipe.warmup_steps:
            return recipe.learning_rate * (max(step, 0) + 1) / recipe.warmup_steps
        progress = min(1.0, (step - recipe.warmup_steps) / max(1, steps - recipe.warmup_steps))
        return recipe.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))

    def train_step(self) -> dict:
        """One step: synthesise a batch, score every voxel and target, update."""
        if self.recipe.train == 'all':
            self.averaged_steps = []  # the weights move on from any average (a lesion-head
            # stage leaves the averaged trunk as it is)
        self.network.train()
        started = time.perf_counter()
        batch = self.synthesizer.sample(self.recipe.batch_size)
        if torch.device(self.device).type == 'cuda':
            torch.cuda.synchronize()
        synthesised = time.perf_counter()
        for group in self.optimizer.param_groups:
            group['lr'] = self.learning_rate()
        device_type = torch.device(self.device).type
        with torch.autocast(device_type, dtype=torch.bfloat16,
                            enabled=self.autocast):
            logits = self.network.dense_logits_split(batch.image,
                                                     trunk_grad=self.recipe.train == 'all')
        loss, parts = dense_loss(logits, batch.labels, batch.lesions, self.composites,
                                 self.recipe.composite_weight, self.recipe.lesion_weight,
                                 self.recipe.partition_dice_weight,
                                 self.recipe.lesion_positive_weight,
                                 self.recipe.lesion_voxel_weight, batch.groups)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.network.parameters(), 5.0)
        self.optimizer.step()
        if torch.device(self.device).type == 'cuda':
            torch.cuda.synchronize()
        finished = time.perf_counter()
        self.step += 1
        self.seconds += finished - started
        self.synthesis_seconds += synthesised - started
        entry = {'step': self.step, 'loss': float(loss.detach()), **parts,
                 'seconds': round(finished - started, 3),
                 'synthesis_seconds': round(synthesised - started, 3)}
        self.history.append(entry)
        return entry

    def schedule_problem(self, until: int) -> str | None:
        """Why training to ``until`` would not follow the recipe's schedule, or None: the
        warm-up counts from ``schedule_start``, so every step before it would train at the
        warm-up's first rate (docs/training.md "The whole-network continuation")."""
        start = self.recipe.schedule_start
        if self.step >= min(until, start):
            return None
        return (f'schedule_start {start} is after the step this run is at ({self.step}); '
                f'steps before it would train at {self.learning_rate():.2g}, the warm-up\'s '
                f'first rate: set schedule_start = {self.step} in the recipe, or resume a '
                f'later state')

    def train(self, until: int, checkpoint: Path | None = None,
              log: Callable[[str], None] = print, journal: Path | None = None,
              seconds: float | None = None) -> None:
        """Train to step ``until``, checkpointing every ``checkpoint_every`` steps; with
        ``seconds``, stop (and checkpoint) once that much wall time has passed.

        Raises:
            BadInputError: the run's step lies before the recipe's ``schedule_start``
                (:meth:`schedule_problem`); nothing is trained.
        """
        problem = self.schedule_problem(until)
        if problem is not None:
            raise BadInputError(f'recipe {self.recipe.name}: {problem}')
        window: list[dict] = []
        deadline = None if seconds is None else time.perf_counter() + seconds
        while self.step < until:
            if deadline is not None and time.perf_counter() >= deadline:
                log(f'stopped at step {self.step}: {seconds:.0f} s of wall time used')
                if checkpoint is not None:
                    self.save(checkpoint)
                break
            entry = self.train_step()
            window.append(entry)
            if journal is not None:
                with open(journal, 'a') as handle:
                    handle.write(json.dumps(entry) + '\n')
            if self.step % self.recipe.log_every == 0 or self.step == until:
                mean = {k: sum(e[k] for e in window if k in e) / max(1, sum(k in e for e in window))
                        for k in ('loss', 'dice', 'composite_dice', 'seconds', 'synthesis_seconds')}
                log(f'step {self.step}/{until}: loss {mean["loss"]:.3f}, Dice {mean["dice"]:.3f}, '
                    f'composite Dice {mean["composite_dice"]:.3f}, {mean["seconds"]:.2f} s/step '
                    f'(synthesis {mean["synthesis_seconds"]:.2f} s)')
                window = []
            if checkpoint is not None and (self.step % self.recipe.checkpoint_every == 0
                                           or self.step == until):
                self.save(checkpoint)


def _kept_calibration(folder: Path, network, manifest: dict) -> tuple[list, dict | None] | None:
    """The logit offsets and calibration record of the folder's ``vision.pt`` when every
    weight of it but a lesion head's equals ``network``'s (in fp16, as shipped); else None."""
    path = folder / 'vision.pt'
    if not path.is_file():
        return None
    data = torch.load(path, map_location='cpu', weights_only=True)
    offsets = data['config'].get('logit_offsets') or []
    ours = {k: v for k, v in half_state(network.state_dict()).items()
            if not k.startswith('lesion_head.')}
    theirs = {k: v for k, v in data['state'].items() if not k.startswith('lesion_head.')}
    if not offsets or ours.keys() != theirs.keys() or any(
            not torch.equal(ours[k], theirs[k]) for k in ours):
        return None
    return list(offsets), manifest.get('vision_training', {}).get('volume_calibration')


def with_atlas_centroids(config):
    """``config`` with the atlas centroids of its labels (:mod:`vpcli.vision.head_size`,
    from ``fsaverage``); unchanged, with a note on stderr, when fsaverage is not installed."""
    from vpcli.vision.head_size import fsaverage_atlas
    try:
        return dataclasses.replace(config, atlas_centroids=fsaverage_atlas(config.label_ids))
    except BadInputError as error:
        print(f'voxelprompt: no head size estimate in this export: {error}', file=sys.stderr)
        return config


def _write_vision(folder: Path, manifest: dict, config, state: dict) -> None:
    """Write ``vision.pt`` (config and fp16 state) atomically and its manifest entries."""
    vision_path = folder / 'vision.pt'
    temporary = vision_path.with_name('.vision.pt.tmp')
    torch.save({'config': config.to_dict(), 'state': state}, temporary)
    os.replace(temporary, vision_path)
    for entry in manifest['files']:
        if entry['role'] == 'vision':
            entry.update(file='vision.pt', sha256=sha256_file(vision_path),
                         bytes=vision_path.stat().st_size)
    manifest['vision_config'] = config.to_dict()


def refresh_atlas_centroids(folder: Path | str) -> dict:
    """Give a weights folder's dense ``vision.pt`` the atlas centroids of its labels
    (weights unchanged), with its manifest and model card; returns the manifest."""
    from vpcli import model_card
    from vpcli.vision.config import VisionConfig
    from vpcli.volumes import write_text_atomic

    folder = Path(folder)
    manifest = json.loads((folder / MANIFEST).read_text())
    data = torch.load(folder / 'vision.pt', map_location='cpu', weights_only=True)
    config = VisionConfig.from_dict(data['config'])
    if not config.dense:
        raise BadInputError(f'{folder / "vision.pt"}: not a dense network')
    from vpcli.vision.head_size import fsaverage_atlas
    config = dataclasses.replace(config, atlas_centroids=fsaverage_atlas(config.label_ids))
    _write_vision(folder, manifest, config, data['state'])
    write_text_atomic(folder / MANIFEST, json.dumps(manifest, indent=2) + '\n')
    model_card.write(folder)
    return manifest


def export_vision(trainer: DenseTrainer, folder: Path | str,
                  state_path: Path | str | None = None) -> dict:
    """Ship a dense network into a weights folder: ``vision.pt`` (fp16 weights, which load
    into fp32; with the recipe's ``calibration_samples``, the volume calibration fitted now
    in its config), the manifest's vision entries and ``vision_training`` record, and the
    model card; optionally the compact training state (``state_path``, uncalibrated) that
    is committed."""
    from vpcli import model_card
    from vpcli.synth.sources import SOURCE_RECORDS
    from vpcli.volumes import write_text_atomic

    folder = Path(folder)
    manifest_path = folder / MANIFEST
    manifest = json.loads(manifest_path.read_text())
    network = trainer.network
    recipe = trainer.recipe
    config, calibration = network.config, None
    # run-time settings follow the recipe's named config (a run begun before a setting
    # existed carries its old default in the checkpoint; training never uses them)
    from vpcli.vision.config import RUN_TIME_KEYS, named_config
    named = named_config(recipe.vision_config)
    config = dataclasses.replace(config, **{key: getattr(named, key) for key in RUN_TIME_KEYS})
    kept = _kept_calibration(folder, network, manifest) if recipe.train == 'lesion_head' else None
    if kept is not None:
        # a lesion-head stage leaves the anatomical channels as they are: the folder's
        # network has the same trunk, so its calibration is theirs
        offsets, calibration = kept
        config = dataclasses.replace(config, logit_offsets=tuple(offsets))
    elif recipe.calibration_samples > 0:
        from vpcli.synth.sources import SOURCES
        from vpcli.vision.calibration import calibrate
        # volumes are calibrated on fully labelled anatomies only (not colin27's partial labels)
        complete = [name for name in recipe.sources if SOURCES[name] == 'train']
        offsets, calibration = calibrate(network, recipe.calibration_samples,
                                         shape=max(64, *recipe.shape), sources=complete,
                                         gca_draws=min(recipe.gca_draws, 3),
                                         spacing_mm=recipe.spacing_mm)
        config = dataclasses.replace(config, logit_offsets=tuple(offsets))
    config = with_atlas_centroids(config)
    _write_vision(folder, manifest, config, half_state(network.state_dict()))
    manifest['vision_training'] = {
        'stage': 'dense vision (docs/training.md)', 'recipe': recipe.name,
        'recipe_file': f'recipes/train/{recipe.name}.toml',
        'recipe_settings': dataclasses.asdict(recipe), 'steps': trainer.step,
        'samples': trainer.step * recipe.batch_size,
        'training_seconds': round(trainer.seconds, 1),
        'synthesis_share': round(trainer.synthesis_seconds / max(trainer.seconds, 1e-9), 4),
        'device': str(trainer.device), 'recipe_changes': trainer.recipe_changes,
        'averaged_steps': trainer.averaged_steps}
    if calibration is not None:
        manifest['vision_training']['volume_calibration'] = calibration
    sources = manifest.setdefault('data_sources', [])
    for name in recipe.sources:
        record = SOURCE_RECORDS[name]
        if all(entry.get('name') != record['name'] for entry in sources):
            sources.insert(1, dict(record))
    write_text_atomic(manifest_path, json.dumps(manifest, indent=2) + '\n')
    model_card.write(folder)
    if state_path is not None:
        trainer.save(state_path, compact=True)
    return manifest
