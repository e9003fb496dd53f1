"""``voxelprompt train``: joint training of the language model and the vision network."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from vpcli.cli._app import app
from vpcli.cli._common import reports_errors, stderr_logger
from vpcli.cli._setup import use_threads
from vpcli.errors import BadInputError


@app.command('train')
@reports_errors
def train(
    recipe: Annotated[str, typer.Option('--recipe', help='Training recipe: a name in recipes/train/ (small, paper, tiny) or a TOML file.')] = 'small',
    output: Annotated[Path, typer.Option('--output', '-o', help='Run folder: checkpoint.pt (resumable) and train_log.jsonl.')] = Path('runs/small'),
    resume: Annotated[Optional[Path], typer.Option('--resume', help='Continue from this checkpoint (exactly: same data, same weights as one long run).')] = None,
    until: Annotated[Optional[int], typer.Option('--until', min=0, help='Train to this step (default: the recipe\'s steps).')] = None,
    device: Annotated[str, typer.Option('--device', help='auto, cpu, cuda or cuda:N.')] = 'auto',
    threads: Annotated[Optional[int], typer.Option('--threads', min=1, help='Torch CPU threads (default: the recipe\'s).')] = None,
    export: Annotated[Optional[Path], typer.Option('--export', help='After training, write a weights folder (agent.pt, vision.pt, tokenizer.model, manifest.json) here.')] = None,
    quiet: Annotated[bool, typer.Option('--quiet', '-q', help='No log lines or progress bar on stderr.')] = False,
    seconds: Annotated[Optional[float], typer.Option('--seconds', min=1, help='Dense vision stage: stop after this much wall time (checkpointed), e.g. to fit a lent GPU call.')] = None,
    stage: Annotated[Optional[str], typer.Option('--stage', help='Check the recipe is of this stage: vision (the dense vision stage, recipes dense-cpu / dense-gpu) or joint (language model and joint episodes).')] = None,
    change_recipe: Annotated[bool, typer.Option('--change-recipe', help='Continue a run under a recipe that differs in data-shaping settings (stage lengths, batch sizes, seed...); recorded in the checkpoint and manifest.')] = False,
) -> None:
    """Train (or continue training) the agent and vision network; checkpoints regularly.

    Steps before the recipe's code_steps train the language model on target programs only;
    later steps run each target program with the live vision network on a synthetic case
    (loss = token cross-entropy + dice_weight x soft Dice).
    """
    import json

    from vpcli.train import JointTrainer, Recipe, find_recipe
    from vpcli.vision.dense_training import recipe_stage

    log = stderr_logger(quiet)

    recipe_path = find_recipe(recipe)
    if stage is not None and stage != (recipe_stage(recipe_path) or 'joint'):
        raise BadInputError(f'{recipe_path}: is not a {stage} recipe (its stage is '
                            f'{recipe_stage(recipe_path) or "joint"})')
    if recipe_stage(recipe_path) == 'vision':
        _train_vision(recipe_path, output, resume, until, device, threads, export, log, seconds)
        return
    if seconds is not None:
        raise BadInputError('--seconds applies to the dense vision stage (stage = "vision" recipes)')
    the_recipe = Recipe.load(recipe_path)
    chosen, checkpoint, resume = _run_setup(the_recipe, threads, device, output, resume)
    if resume is not None:
        trainer = JointTrainer.resume(resume, chosen, the_recipe, change_recipe=change_recipe)
        log(f'resumed {resume} at step {trainer.step}')
        if trainer.recipe_changes and trainer.recipe_changes[-1]['step'] == trainer.step:
            log(f'recipe changed at step {trainer.step}: {trainer.recipe_changes[-1]["changed"]}')
    else:
        trainer = JointTrainer.create(the_recipe, chosen, log)
        log(f'new run of recipe {the_recipe.name} on {chosen}')
    target = the_recipe.steps if until is None else until
    output.mkdir(parents=True, exist_ok=True)
    journal = open(output / 'train_log.jsonl', 'a')

    def log_entry(line: str) -> None:
        journal.write(json.dumps(trainer.history[-1]) + '\n')
        journal.flush()
        log(line)

    try:
        trainer.train(target, checkpoint, log_entry, progress=not quiet and sys.stderr.isatty())
    finally:
        journal.close()
    log(f'step {trainer.step}; checkpoint {checkpoint}')
    if export is not None:
        try:  # recorded relative to the repository when it lives there
            shown = str(recipe_path.resolve().relative_to(Path(__file__).resolve().parents[2]))
        except ValueError:
            shown = str(recipe_path)
        trainer.export(export, recipe_path=shown)
        state = Path(export) / 'train-state' / f'{the_recipe.name}-checkpoint.pt'
        trainer.save(state, compact=True)
        log(f'weights written to {export} (compact training state {state})')


def _run_setup(recipe, threads: Optional[int], device: str, output: Path,
               resume: Optional[Path]) -> tuple[str, Path, Optional[Path]]:
    """Threads (the option over the recipe's), the resolved device, the run's checkpoint, and
    what to resume: the given checkpoint, else the run folder's own when it exists (rerunning
    the same command continues the run)."""
    from vpcli.devices import resolve_device
    from vpcli.train import CHECKPOINT_FILE
    if threads:
        recipe.threads = threads
    use_threads(recipe.threads)
    checkpoint = output / CHECKPOINT_FILE
    if resume is None and checkpoint.is_file():
        resume = checkpoint
    return resolve_device(device), checkpoint, resume


def _train_vision(recipe_path: Path, output: Path, resume: Optional[Path], until: Optional[int],
                  device: str, threads: Optional[int], export: Optional[Path], log,
                  seconds: Optional[float]) -> None:
    """The dense vision stage (``stage = "vision"`` recipes; docs/training.md)."""
    from vpcli.vision.dense_training import DenseRecipe, DenseTrainer

    recipe = DenseRecipe.load(recipe_path)
    chosen, checkpoint, resume = _run_setup(recipe, threads, device, output, resume)
    if resume is not None:
        trainer = DenseTrainer.resume(resume, chosen, recipe)
        log(f'resumed {resume} at step {trainer.step}')
    else:
        trainer = DenseTrainer.create(recipe, chosen)
        log(f'new dense vision run of recipe {recipe.name} on {chosen}')
    target = recipe.steps if until is None else until
    problem = trainer.schedule_problem(target)  # train() refuses too; here with the file
    if problem is not None:
        raise BadInputError(f'{recipe_path}: {problem}')
    output.mkdir(parents=True, exist_ok=True)
    trainer.train(target, checkpoint, log,
                  journal=output / 'train_log.jsonl', seconds=seconds)
    log(f'step {trainer.step}; checkpoint {checkpoint}')
    if export is not None:
        from vpcli.vision.dense_training import export_vision
        from vpcli.weights import verify_manifest
        folder = Path(export)
        verify_manifest(folder)  # the folder's other files must be intact
        state = folder / 'train-state' / f'{recipe.name}-checkpoint.pt'
        export_vision(trainer, folder, state)
        log(f'vision network written to {folder / "vision.pt"} (compact training state {state})')
