"""A small BIDS dataset built by the tests: several subjects, two sessions, T1w + FLAIR,
one corrupt file and one subject missing a modality."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import nibabel as nib

SUBJECTS = ('01', '02', '03', '04', '05')
SESSIONS = ('20200101', '20210601')
CORRUPT = ('04', '20210601', 'FLAIR')      # truncated .nii.gz
MISSING = ('05', 'FLAIR')                  # sub-05 has no FLAIR at all


def _scan(shape, spacing, seed):
    rng = np.random.default_rng(seed)
    data = rng.normal(100, 5, shape).astype(np.float32)
    centre = np.array(shape) / 2
    grid = np.indices(shape).transpose(1, 2, 3, 0) * spacing
    inside = (((grid - centre * spacing) / np.array([30, 36, 30])) ** 2).sum(-1) <= 1
    data[inside] += 200
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = -centre * spacing
    return nib.Nifti1Image(data, affine)


def build_bids(root: Path) -> Path:
    """Write the dataset under ``root`` and return ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / 'dataset_description.json').write_text(json.dumps(
        {'Name': 'voxelprompt test', 'BIDSVersion': '1.9.0', 'DatasetType': 'raw'}))
    (root / 'participants.tsv').write_text(
        'participant_id\n' + ''.join(f'sub-{s}\n' for s in SUBJECTS))
    for s_index, subject in enumerate(SUBJECTS):
        for t_index, session in enumerate(SESSIONS):
            anat = root / f'sub-{subject}' / f'ses-{session}' / 'anat'
            anat.mkdir(parents=True, exist_ok=True)
            for suffix, shape, spacing in (('T1w', (40, 48, 40), (2.0, 2.0, 2.0)),
                                           ('FLAIR', (40, 48, 10), (2.0, 2.0, 8.0))):
                if (subject, suffix) == MISSING:
                    continue
                path = anat / f'sub-{subject}_ses-{session}_{suffix}.nii.gz'
                nib.save(_scan(shape, spacing, seed=100 * s_index + 10 * t_index), path)
                (anat / f'sub-{subject}_ses-{session}_{suffix}.json').write_text(
                    json.dumps({'AcquisitionDateTime': f'{session[:4]}-{session[4:6]}-'
                                                       f'{session[6:]}T09:00:00'}))
                if (subject, session, suffix) == CORRUPT:
                    path.write_bytes(path.read_bytes()[:200])
    return root
