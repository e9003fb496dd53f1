"""Where a synthetic lesion is: side, lobe/region and arterial territory of its mask.

The descriptors of :class:`~vpcli.synth.lesions.SynthLesion` (``side``, ``lobe``,
``lobe_fractions``, ``territory``), read from the canvas label map under the lesion: one
per-voxel lobe/territory map per session (:func:`region_maps`), then one description per
lesion mask (:func:`describe_location`). Re-exported by :mod:`vpcli.synth.lesions`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from vpcli.synth.vocabulary import Vocabulary


def region_maps(labels: np.ndarray, vocabulary: 'Vocabulary', spacing_mm: float,
                ) -> tuple[np.ndarray, list[str], np.ndarray, list[str]]:
    """Per-voxel lobe/region and territory codes of a canvas label map.

    Cortical parcels give their lobe and territory; cerebral white matter and corpus
    callosum take those of the nearest cortical parcel; hippocampus and amygdala are
    temporal; other structures get ``deep_grey``, ``ventricles``, ``cerebellum``,
    ``brainstem``; background is ``extra_axial``.

    Returns:
        ``(lobe_codes, lobe_names, territory_codes, territory_names)``; code 0 of each
        is the first name.
    """
    from scipy import ndimage
    lobes = ['extra_axial', 'frontal', 'parietal', 'temporal', 'occipital', 'cingulate',
             'insula', 'deep_grey', 'ventricles', 'cerebellum', 'brainstem']
    territories = ['none', 'ACA', 'MCA', 'PCA', 'vertebrobasilar']
    size = max(vocabulary.ids) + 1
    lobe_lookup = np.zeros(size, dtype=np.int16)
    territory_lookup = np.zeros(size, dtype=np.int16)
    tissue_region = {'thalamus': 'deep_grey', 'caudate': 'deep_grey', 'putamen': 'deep_grey',
                     'pallidum': 'deep_grey', 'accumbens': 'deep_grey', 'ventral_dc': 'deep_grey',
                     'hippocampus': 'temporal', 'amygdala': 'temporal', 'ventricle': 'ventricles',
                     'csf': 'ventricles', 'choroid_plexus': 'ventricles',
                     'cerebellar_gm': 'cerebellum', 'cerebellar_wm': 'cerebellum',
                     'brainstem': 'brainstem'}
    for label_id, info in vocabulary.labels.items():
        lobe = vocabulary.lobe_of(label_id) or tissue_region.get(info.tissue)
        if lobe is not None:
            lobe_lookup[label_id] = lobes.index(lobe)
        for group in info.groups:
            if group.startswith('territory:'):
                territory_lookup[label_id] = territories.index(group[10:])
    lobe_codes = lobe_lookup[labels]
    territory_codes = territory_lookup[labels]
    white = np.isin(labels, vocabulary.ids_with_tissue('cerebral_wm'))
    cortex = labels >= 1000
    if white.any() and cortex.any():
        _, index = ndimage.distance_transform_edt(~cortex, return_indices=True)
        nearest = labels[tuple(i[white] for i in index)]
        lobe_codes[white] = lobe_lookup[nearest]
        territory_codes[white] = territory_lookup[nearest]
    return lobe_codes, lobes, territory_codes, territories


def describe_location(mask: np.ndarray, labels: np.ndarray, vocabulary: 'Vocabulary',
                      lobe_codes: np.ndarray, lobe_names: list[str],
                      territory_codes: np.ndarray, territory_names: list[str],
                      ) -> tuple[str, str, dict[str, float], str | None]:
    """Side, main lobe/region, lobe fractions and main territory of a lesion mask."""
    under = labels[mask]
    size = max(vocabulary.ids) + 1
    side_lookup = np.zeros(size, dtype=np.int8)  # 0 background, 1 left, 2 right, 3 midline
    for label_id, info in vocabulary.labels.items():
        side_lookup[label_id] = {'left': 1, 'right': 2, 'midline': 3}[info.side]
    counts = np.bincount(side_lookup[under], minlength=4)
    lateral = counts[1] + counts[2]
    if counts[3] > lateral:
        side = 'midline'
    elif lateral == 0:
        side = 'midline'
    elif counts[1] >= 0.75 * lateral:
        side = 'left'
    elif counts[2] >= 0.75 * lateral:
        side = 'right'
    else:
        side = 'midline'
    lobe_count = np.bincount(lobe_codes[mask], minlength=len(lobe_names))
    fractions = {lobe_names[i]: float(c / mask.sum()) for i, c in enumerate(lobe_count) if c}
    lobe = lobe_names[int(np.argmax(lobe_count))]
    territory_count = np.bincount(territory_codes[mask], minlength=len(territory_names))
    territory_count[0] = 0
    territory = territory_names[int(np.argmax(territory_count))] if territory_count.any() else None
    return side, lobe, fractions, territory
