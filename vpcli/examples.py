"""The bundled real example: the MNI ICBM152 2009c T1 template, as a tiny BIDS dataset.

The template ships inside the ``nilearn`` package (a dependency); nothing is
downloaded and no third-party file is committed to this repository. Besides the T1w
image, the example holds a two-class tissue label map (1 grey matter, 2 white matter)
made from the template's own grey/white-matter probability maps: a voxel takes the
class whose probability is largest, when that probability is above 0.5.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from vpcli.errors import BadInputError

SUBJECT = 'mni152'
TEMPLATE_FILES = {
    'T1w': 'mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz',
    'gm': 'mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz',
    'wm': 'mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz',
}
TISSUE_LABELS = {1: 'grey matter', 2: 'white matter'}


def template_dir() -> Path:
    """Folder of nilearn's packaged template files (found without importing nilearn)."""
    spec = importlib.util.find_spec('nilearn')
    if spec is None or not spec.submodule_search_locations:
        raise BadInputError('nilearn is not installed; it carries the example scan '
                            '(pip install nilearn)')
    folder = Path(next(iter(spec.submodule_search_locations))) / 'datasets' / 'data'
    missing = [name for name in TEMPLATE_FILES.values() if not (folder / name).is_file()]
    if missing:
        raise BadInputError(f'{folder}: nilearn is missing the template file {missing[0]}')
    return folder


def write_example(bids_root: Path) -> dict[str, Path]:
    """Write the example BIDS dataset under ``bids_root``; return its files by role.

    Returns:
        ``{'T1w': ..., 'dseg': ...}``, paths of the T1w scan and the tissue label map.
    """
    import torch
    import voxel as vx

    from vpcli.volumes import save_volume, write_text_atomic

    source = template_dir()
    anat = bids_root / f'sub-{SUBJECT}' / 'anat'
    t1w_path = anat / f'sub-{SUBJECT}_T1w.nii.gz'
    dseg_path = anat / f'sub-{SUBJECT}_desc-tissue_dseg.nii.gz'

    t1w = vx.load_volume(source / TEMPLATE_FILES['T1w'])
    save_volume(t1w.new(t1w.tensor.to(torch.float32)), t1w_path)

    grey = vx.load_volume(source / TEMPLATE_FILES['gm']).tensor.float() / 255
    white = vx.load_volume(source / TEMPLATE_FILES['wm']).tensor.float() / 255
    labels = torch.zeros_like(grey, dtype=torch.int32)
    labels[(grey > 0.5) & (grey >= white)] = 1
    labels[(white > 0.5) & (white > grey)] = 2
    save_volume(t1w.new(labels), dseg_path)

    write_text_atomic(t1w_path.with_name(t1w_path.name.replace('.nii.gz', '.json')), json.dumps({
        'Description': 'MNI ICBM152 2009c nonlinear symmetric T1 template (1 mm), as packaged '
                       'by nilearn; used as the voxelprompt example scan',
        'AcquisitionDate': '2009-01-01'}, indent=2) + '\n')
    write_text_atomic(dseg_path.with_name(dseg_path.name.replace('.nii.gz', '.tsv')),
                      'index\tname\n' + ''.join(f'{i}\t{n}\n' for i, n in TISSUE_LABELS.items()))
    write_text_atomic(bids_root / 'dataset_description.json', json.dumps({
        'Name': 'voxelprompt example (MNI ICBM152 2009c template)', 'BIDSVersion': '1.9.0',
        'DatasetType': 'raw', 'License': 'see the ICBM152 2009 template licence (nilearn)'},
        indent=2) + '\n')
    write_text_atomic(bids_root / 'participants.tsv', f'participant_id\nsub-{SUBJECT}\n')
    return {'T1w': t1w_path, 'dseg': dseg_path}
