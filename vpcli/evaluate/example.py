"""The ``example`` suite: Dice on the one real scan shipped."""

from __future__ import annotations

from pathlib import Path

from vpcli.errors import BadInputError
from vpcli.evaluate.common import Progress, _mean, _no_progress, _number, mask_dice
from vpcli.evaluate.tasks import run_task
from vpcli.metrics import dice


# -----------------------------------------------------------------------------
# running a suite, reporting
# -----------------------------------------------------------------------------

#: the real-scan check: prompt, the target k* segments, the example label ids of its reference
EXAMPLE_PROMPTS = (
    ('segment the white matter', 'bilateral cerebral white matter', (2,)),
    # "grey matter" is all of it (cortex, deep grey, cerebellar cortex), as is the reference
    ('segment the grey matter', 'bilateral grey matter', (1,)),
    ('segment the brain', 'whole brain', (1, 2)),
    # no reference on this scan: their masks show whether the network tells targets apart
    ('segment the lateral ventricles', 'bilateral lateral ventricle', None),
    ('segment the left hippocampus', 'left hippocampus', None),
)


def example_suite(bundle, count: int = 1, seed: int = 0, device: str = 'cpu',
                  programs: str = 'agent', progress: Progress = _no_progress) -> dict:
    """Dice on the one real scan shipped: the MNI ICBM152 2009c T1w (``voxelprompt example``),
    against references made from the template's own tissue probability maps (white matter:
    label 2; brain: labels 1-2 of its grey/white label map, see :mod:`vpcli.examples`).

    The white-matter reference includes cerebellar white matter, which the target
    ``bilateral cerebral white matter`` does not, so a perfect network scores below 1 here.
    Prompts without a reference add their mask volumes and ``target_overlap``: the mean
    Dice between the masks of every two different targets (1.0: the same mask whatever the
    target). ``count`` must be 1: the prompts run once (the run is deterministic).
    """
    import tempfile

    from vpcli.examples import write_example
    from vpcli.library.registry import registry
    from vpcli.volumes import load_scans, load_volume
    if count != 1:
        raise BadInputError(f'--count {count}: the example suite runs its prompts once on the one '
                            'example scan (the run is deterministic); leave --count out')
    per_prompt, dices, arrays = {}, [], []
    with tempfile.TemporaryDirectory() as folder:
        paths = write_example(Path(folder))
        scans = load_scans([paths['T1w']])
        labels = load_volume(paths['dseg'], label_map=True)
        for prompt, target, ids in EXAMPLE_PROMPTS:
            from vpcli.tasks.categories import TaskDraft
            program = f'# step 1\nenc = encode(img0)\n# step 2\nroi = segment(enc, "{target}")\n'
            draft = TaskDraft('segmentation', 'example', prompt, (), program,
                              (('roi', target),), lambda world: None)
            task = run_task(bundle, draft, None, scans, programs=programs, seed=seed, device=device)
            masks = [entry.volume for entry in task.program_run.context.saved if entry.kind == 'mask']
            from vpcli.volumes import Mask
            made = masks[0] if masks and not task.refused else None
            value = None
            if ids is not None:
                reference = Mask(volume=labels.new(torch_isin(labels.tensor, ids)), sources=(),
                                 description=target)
                value = mask_dice(made, reference) if made is not None else 0.0
                dices.append(value)
            if made is not None:
                arrays.append(made.volume.tensor[0].cpu().numpy() > 0.5)
            volume_ml = None if made is None else float(registry()['volume'].func(made))
            per_prompt[prompt] = {'target': target, 'dice': value, 'volume_ml': volume_ml,
                                  'program_match': task.program_match,
                                  'refused': task.refused, 'error': task.error,
                                  'program': [s.model_text for s in task.record.steps]
                                  if task.record is not None else []}
            progress(f'example: {prompt!r} ' + (f'Dice {value:.3f}' if value is not None else
                                                 f'{_number(volume_ml, 1)} mL'))
    overlaps = [dice(a, b) for i, a in enumerate(arrays) for b in arrays[i + 1:]
                if a.shape == b.shape]
    return {'programs': programs,
            'metrics': {'mean_dice': _mean(dices), 'prompts': len(dices),
                        'target_overlap': _mean(overlaps), 'targets': len(arrays)},
            'per_prompt': per_prompt}


def torch_isin(tensor, ids):
    """Boolean tensor: voxels whose label is one of ``ids``."""
    import torch
    return torch.isin(tensor, torch.tensor(list(ids), dtype=tensor.dtype))
