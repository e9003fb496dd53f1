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

The package, by what each module holds: :mod:`~vpcli.train.recipe` (the recipe, its file,
the stage and learning-rate schedule), :mod:`~vpcli.train.episodes` (code-only episodes and
hard-example mining), :mod:`~vpcli.train.joint_cases` (a joint block's case and tasks),
:mod:`~vpcli.train.joint_episode` (the teacher-forced joint episode),
:mod:`~vpcli.train.losses` (cross-entropy, soft Dice, the φ anchor),
:mod:`~vpcli.train.checkpoint` (checkpoint, resume, compact state, export),
:mod:`~vpcli.train.run_log` (log entries, progress bar) and :mod:`~vpcli.train.trainer`
(:class:`JointTrainer`, the loop).
"""

from vpcli.train.checkpoint import CHECKPOINT_FILE, DATA_SOURCES
from vpcli.train.losses import TrainingVision, soft_dice_loss
from vpcli.train.recipe import Recipe, find_recipe, read_recipe_file
from vpcli.train.trainer import JointTrainer

__all__ = ['CHECKPOINT_FILE', 'DATA_SOURCES', 'JointTrainer', 'Recipe', 'TrainingVision',
           'find_recipe', 'read_recipe_file', 'soft_dice_loss']
