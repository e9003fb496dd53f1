"""Training recipes (``recipes/train/NAME.toml``): the settings of a joint run, reading and
checking their file, and the stage and learning-rate schedule they imply for each step."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

from vpcli.errors import BadInputError


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
    return Path(__file__).resolve().parents[2] / 'recipes' / 'train' / f'{name_or_path}.toml'


def stage_at(recipe: Recipe, step: int) -> str:
    """``code``, ``joint`` or ``refresh`` (the code refresh) for a step of ``recipe``."""
    if step < recipe.code_steps:
        return 'code'
    if recipe.refresh_steps and recipe.refresh_start <= step < recipe.refresh_start + recipe.refresh_steps:
        return 'refresh'
    return 'joint'


def agent_learning_rate(recipe: Recipe, step: int) -> float:
    """The language model's learning rate at a step: warm-up and cosine decay to the joint
    stage's rate in the code-only stage, the joint rate after it, and in a code refresh 20
    steps of warm-up to ``refresh_learning_rate``, then cosine to the joint rate."""
    from vpcli.agent.training import warmup_cosine
    if stage_at(recipe, step) == 'refresh':  # 20 warm-up steps, cosine to the joint stage's rate
        return warmup_cosine(step - recipe.refresh_start, 20, recipe.refresh_steps,
                             recipe.refresh_learning_rate, recipe.joint_learning_rate)
    if step < recipe.code_steps:
        return warmup_cosine(step, recipe.warmup_steps, recipe.code_steps,
                             recipe.learning_rate, recipe.joint_learning_rate)
    return recipe.joint_learning_rate
