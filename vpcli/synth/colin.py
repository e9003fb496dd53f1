"""Colin27: a third anatomy for the dense vision stage, one real head with partial labels.

The MNI single-subject template "Colin27" (``ch2``: 27 T1 scans of one man, averaged, 1 mm,
head and skull included; ``ch2bet``: its brain) and the AAL atlas that was drawn by hand on
that same brain (Tzourio-Mazoyer et al. 2002) ship in Debian's ``mricron-data`` package
(``apt-get install mricron-data``; BSD-3-Clause; read at training time, never committed).
It is independent of the other sources: fsaverage and the GCA atlas are averages of
FreeSurfer's 40 training subjects, the held-out ``dk_mni`` is a 35-subject average.

AAL follows its own protocol, not FreeSurfer's, and leaves white matter, ventricles,
brainstem and ventral diencephalon unlabelled, so the source gives **partial labels**:
every brain voxel is labelled with either one vocabulary label or a *group* of labels it
is one of (:func:`groups`); the dense loss scores a group voxel by the probability of its
whole group (the marginal likelihood of the group, and Dice only on targets the group lies
wholly inside or wholly outside, :func:`vpcli.vision.dense_training.dense_loss`).

The labels, from AAL and a three-class k-means of the T1 intensities inside ``ch2bet``:

=========================================  ==================================================
where                                      label
=========================================  ==================================================
AAL thalamus, pallidum                     that structure (fluid intensity: ``fluid``)
AAL hippocampus, amygdala                  that structure where grey (white: ``brain``; fluid:
                                           ``fluid``, the temporal horn lies in them)
AAL caudate, putamen                       where grey, that structure or the accumbens (AAL
                                           has no accumbens; FreeSurfer's lies in their
                                           ventral ends); white: ``brain``; fluid: ``fluid``
AAL cerebellum and vermis                  cerebellar cortex or white matter by intensity,
                                           the side by x
AAL cortex, grey intensity                 any cortical parcel of the hemisphere (AAL's
                                           parcels are not Desikan-Killiany's)
AAL cortex, white intensity; unlabelled    ``white``: the side's cerebral or cerebellar
white intensity                            white matter, brainstem, ventral DC, chiasm, CC
fluid intensity, unlabelled                ``fluid``: a ventricle, CSF or background (sulci)
anything else inside ``ch2bet``            ``brain``: any label (brain vs head only)
outside ``ch2bet``                         background (the head: skull, scalp, eyes)
=========================================  ==================================================

For synthesis a second, complete map (*generation* labels) gives each voxel a vocabulary
label whose tissue matches its intensity class, so that per-label random intensities and
lesion placement work as for the other sources.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import voxel as vx

#: Debian package that ships the files, and their paths under /usr/share
PACKAGE = 'mricron-data'
FILES = {'head': 'mricron/templates/ch2.nii.gz', 'brain': 'mricron/templates/ch2bet.nii.gz',
         'aal': 'mricron/templates/aal.nii.gz', 'aal_names': 'mricron/templates/aal.nii.txt'}

#: partial labels are written into label maps as GROUP_BASE + the group's position in groups()
GROUP_BASE = 10000

_CORPUS_CALLOSUM = (251, 252, 253, 254, 255)


@functools.lru_cache(maxsize=1)
def groups() -> dict[str, tuple[int, ...]]:
    """Group name -> member vocabulary ids (0 = background), from the installed vocabulary;
    a group's label-map value is ``GROUP_BASE`` + its position here."""
    from vpcli.synth.vocabulary import load_vocabulary
    ids = load_vocabulary().ids
    left_cortex = tuple(i for i in ids if 1000 <= i < 2000)
    right_cortex = tuple(i for i in ids if 2000 <= i < 3000)
    return {
        'left-cortex': left_cortex,
        'right-cortex': right_cortex,
        'left-caudate-or-accumbens': (11, 26),
        'right-caudate-or-accumbens': (50, 58),
        'left-putamen-or-accumbens': (12, 26),
        'right-putamen-or-accumbens': (51, 58),
        'left-white': (2, 7, 16, 28, 85) + _CORPUS_CALLOSUM,
        'right-white': (41, 46, 16, 60, 85) + _CORPUS_CALLOSUM,
        'fluid': (0, 4, 5, 14, 15, 24, 31, 43, 44, 63),
        'brain': (0,) + tuple(ids),
    }


def group_id(name: str) -> int:
    """The label-map value of a group."""
    return GROUP_BASE + list(groups()).index(name)


def group_mirror() -> dict[int, int]:
    """Label-map value of each group -> that of its mirror image (left <-> right)."""
    names = list(groups())
    out = {}
    for name in names:
        other = name.replace('left-', '@').replace('right-', 'left-').replace('@', 'right-')
        out[group_id(name)] = group_id(other if other in names else name)
    return out


def _intensity_centres(values: np.ndarray, classes: int = 3) -> np.ndarray:
    """Class centres (ascending) of a 1D k-means (scipy's Lloyd iterations) from
    percentile starts: fluid, grey and white matter of a T1 brain."""
    from scipy.cluster.vq import kmeans2
    starts = np.percentile(values, np.linspace(10, 90, classes))[:, None]
    centres, _ = kmeans2(values[:, None], starts, iter=30, minit='matrix')
    return np.sort(centres[:, 0])


def _aal_names() -> dict[int, str]:
    from vpcli.package_data import debian_file
    names = {}
    for line in debian_file(PACKAGE, FILES['aal_names']).read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].isdigit():
            names[int(parts[0])] = parts[1]
    return names


def label_maps(t1: np.ndarray, brain: np.ndarray, aal: np.ndarray, aal_names: dict[int, str],
               x_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The partial (supervision) and the complete (generation) label maps of one head.

    Args:
        t1: T1 intensities.
        brain: Brain mask (``ch2bet > 0``).
        aal: AAL labels on the same grid.
        aal_names: AAL index -> name (``Hippocampus_L``, ``Vermis_3``, ...).
        x_mm: World x of each voxel (RAS mm; left < 0).

    Returns:
        ``(labels, generation)`` int32 maps: vocabulary ids and group values
        (:func:`group_id`), and vocabulary ids only.
    """
    centres = _intensity_centres(t1[brain].astype(np.float64))
    tissue = np.abs(t1[..., None].astype(np.float64) - centres).argmin(-1)  # 0 fluid 1 grey 2 white
    fluid, grey, white = tissue == 0, tissue == 1, tissue == 2
    left = x_mm < 0
    labels = np.zeros(t1.shape, np.int32)
    generation = np.zeros(t1.shape, np.int32)

    def put(where, label, generated):
        where = where & brain
        labels[where] = np.broadcast_to(label, t1.shape)[where]
        generation[where] = np.broadcast_to(generated, t1.shape)[where]

    def sided(left_value, right_value, where_left):
        return np.where(where_left, left_value, right_value)

    # unlabelled brain: by intensity
    put(white, sided(group_id('left-white'), group_id('right-white'), left), sided(2, 41, left))
    put(fluid, group_id('fluid'), sided(4, 43, left))
    put(grey, group_id('brain'), sided(1028, 2028, left))

    exact = {'Thalamus': (10, 49), 'Pallidum': (13, 52), 'Hippocampus': (17, 53),
             'Amygdala': (18, 54)}
    either = {'Caudate': ('caudate-or-accumbens', 11, 50),
              'Putamen': ('putamen-or-accumbens', 12, 51)}
    for index, name in aal_names.items():
        region = aal == index
        if not region.any():
            continue
        stem, _, side = name.rpartition('_')
        is_left = side == 'L'
        if name.startswith(('Cerebelum', 'Vermis')):
            side_left = left if name.startswith('Vermis') else np.full(t1.shape, is_left)
            put(region & ~fluid, sided(np.where(white, 7, 8), np.where(white, 46, 47), side_left),
                sided(np.where(white, 7, 8), np.where(white, 46, 47), side_left))
            put(region & fluid, group_id('fluid'), sided(4, 43, side_left))
        elif stem in exact:
            value = exact[stem][0 if is_left else 1]
            # thalamus and pallidum are partly white-bright on T1; hippocampus and
            # amygdala are grey, AAL's outlines of them reach into the white matter
            inside = ~fluid if stem in ('Thalamus', 'Pallidum') else grey
            put(region & inside, value, value)
            put(region & white & ~inside, group_id('brain'), value)
            put(region & fluid, group_id('fluid'), 5 if is_left else 44)
        elif stem in either:
            group, left_id, right_id = either[stem]
            value = left_id if is_left else right_id
            put(region & grey, group_id(('left-' if is_left else 'right-') + group), value)
            put(region & white, group_id('brain'), value)
            put(region & fluid, group_id('fluid'), sided(4, 43, is_left))
        else:  # cortex
            hemisphere = 'left' if is_left else 'right'
            put(region & grey, group_id(f'{hemisphere}-cortex'), 1028 if is_left else 2028)
            put(region & fluid, group_id('brain'), 1028 if is_left else 2028)
    return labels, generation


@functools.lru_cache(maxsize=1)
def colin_head() -> tuple['vx.Volume', 'vx.Volume', 'vx.Volume']:
    """``(labels, head, generation)`` of Colin27 as voxel volumes on the ``ch2`` grid.

    Raises:
        BadInputError: ``mricron-data`` is not installed.
    """
    import torch

    from vpcli.package_data import debian_file
    from vpcli.volumes import load_volume

    head = load_volume(debian_file(PACKAGE, FILES['head']), label_map=False)
    brain = load_volume(debian_file(PACKAGE, FILES['brain']), label_map=False)
    aal = load_volume(debian_file(PACKAGE, FILES['aal']), label_map=True)
    t1 = head.tensor[0].numpy().astype(np.float32)
    x_mm = head.geometry.grid('world', device='cpu')[..., 0].double().numpy()
    labels, generation = label_maps(t1, brain.tensor[0].numpy() > 0,
                                    aal.tensor[0].numpy().astype(np.int32), _aal_names(), x_mm)
    return (head.new(torch.from_numpy(labels)[None]), head,
            head.new(torch.from_numpy(generation)[None]))
