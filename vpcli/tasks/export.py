"""Write sampled tasks to disk for a person to inspect (``voxelprompt synth``).

Each case folder holds the scans (``img0.nii.gz`` ...), the ground-truth mask of every
``segment`` call of the target program (``truth_<variable>[_ses-N].nii.gz``), the prompt,
the program (``program.py``, runnable with ``voxelprompt exec``), ``expected.json``
(scans as the agent sees them, expected outputs and answer, lesions with their tags) and
``preview.png`` (three orthogonal slices of the first scan through the first target's
centre, with the target outlined).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from vpcli.tasks.categories import TaskDraft
from vpcli.tasks.world import CaseInfo
from vpcli.volumes import json_ready


def describe(draft: TaskDraft, info: CaseInfo, expected) -> dict:
    """The JSON record of a sampled task."""
    return {
        'category': draft.category,
        'variant': draft.variant,
        'prompt': draft.prompt,
        'scans': [scan.describe() for scan in draft.scans],
        'program': draft.program,
        'segments': [{'variable': v, 'target': t} for v, t in draft.segments],
        'expected_answer': expected.answer,
        'expected_outputs': [{'name': n, 'value': json_ready(v), 'unit': u}
                             for n, (v, u) in expected.outputs.items()],
        'expected_images': sorted(expected.images),
        'lesions': [dataclasses.asdict(lesion) for lesion in info.lesions],
    }


def _slices_through(array: np.ndarray, center: tuple[int, int, int]):
    return [array[center[0], :, :], array[:, center[1], :], array[:, :, center[2]]]


def write_preview(path: Path, scan, mask, title: str) -> Path:
    """PNG: three orthogonal slices of ``scan`` (RAS-reoriented) through the mask's centre,
    with the mask outlined in red."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    from vpcli.volumes import voxel_spacing_mm
    image = scan.volume.reorient('RAS')
    inside = mask.volume.reorient('RAS').tensor[0].numpy().astype(bool)
    data = image.tensor[0].numpy().astype(np.float32)
    if inside.any():
        center = tuple(int(round(c)) for c in np.argwhere(inside).mean(0))
    else:
        center = tuple(s // 2 for s in data.shape)
    spacing = voxel_spacing_mm(image.geometry)
    low, high = np.percentile(data, [1, 99])
    figure, axes = plt.subplots(1, 3, figsize=(10, 3.6))
    aspects = [spacing[2] / spacing[1], spacing[2] / spacing[0], spacing[1] / spacing[0]]
    for axis, picture, outline, aspect, name in zip(
            axes, _slices_through(data, center), _slices_through(inside, center), aspects,
            ('sagittal', 'coronal', 'axial')):
        axis.imshow(picture.T, cmap='gray', origin='lower', vmin=low, vmax=high, aspect=aspect)
        if outline.any():
            axis.contour(outline.T.astype(float), levels=[0.5], colors='red', linewidths=0.8)
        axis.set_title(name, fontsize=8)
        axis.axis('off')
    figure.suptitle(title if len(title) < 110 else title[:107] + '...', fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def write_case(folder: Path, draft: TaskDraft, info: CaseInfo, world, expected) -> list[Path]:
    """Write one sampled task (scans, truth masks, prompt, program, expected, preview)."""
    from vpcli.volumes import save_volume, write_text_atomic

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for scan in world.case.scans:
        written.append(save_volume(scan.volume, folder / f'{scan.name}.nii.gz'))
    sessions = len(world.session_labels)
    first_mask = None
    for variable, target in draft.segments:
        for session in range(sessions):
            mask = world.mask(target, session)
            suffix = f'_ses-{session + 1:02d}' if sessions > 1 else ''
            volume = mask.volume.new(mask.volume.tensor.to(dtype=__import__('torch').uint8),
                                     keep_labels=False)
            written.append(save_volume(volume, folder / f'truth_{variable}{suffix}.nii.gz'))
            if first_mask is None:
                first_mask = (world.first_scan(session), mask)
    written.append(write_text_atomic(folder / 'prompt.txt', draft.prompt + '\n'))
    written.append(write_text_atomic(folder / 'program.py', draft.program))
    record = describe(draft, info, expected)
    written.append(write_text_atomic(folder / 'expected.json', json.dumps(record, indent=2) + '\n'))
    if first_mask is not None:
        scan, mask = first_mask
        written.append(write_preview(folder / 'preview.png', scan, mask,
                                     f'{draft.category}: {draft.prompt}'))
    return written
