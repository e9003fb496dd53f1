"""Quality control without ground truth: is a mask, and the volume measured on it, credible?

Two kinds of evidence, combined into flags that reach ``metrics.json`` (a ``qc`` block per
mask, a ``warnings`` list), stderr and ``report.html`` (docs/qc.md):

**Mask signals**, computed when a dense network segments (:func:`mask_signals`), from the
target's probability map and the brain's:

- ``confidence``: mean probability over the mask's voxels (1: certain everywhere);
- ``expected_dice``: ``2 sum(p over the mask) / (sum(p) + |mask|)``, the Dice the mask would
  have in expectation if the probabilities were calibrated;
- ``edge_uncertainty``: voxels with probability in (0.2, 0.8) per mask voxel;
- ``components``, ``largest_component_fraction`` and ``fragment_fraction`` (the share of the
  mask in pieces holding less than 10 % of it; 26-connectivity);
- ``side``: for a left or right target, whether the mask's centre lies on that side of the
  brain's centre (a mirrored mask is wrong whatever its size).

``score`` = expected Dice x (1 - fragment fraction), in [0, 1]. A mask scoring under
:data:`SCORE_THRESHOLD` is flagged (threshold and its calibration against true Dice on
held-out synthetic cases: docs/qc.md).

**Plausibility of the volume** (:func:`plausible_range`): wide adult ranges per structure
(:data:`LABEL_RANGES_ML`), summed over a composite target's parts; a volume outside its
range, or an empty mask, is flagged. Where the network estimated the head's intracranial
volume (``etiv_ml``), the range is scaled to that head and the mask's ``icv_fraction`` is
given. Pairs of left and right measurements of one structure are flagged when they differ
by more than :data:`MAX_ASYMMETRY`.
"""

from __future__ import annotations

import math
import re
from typing import Any, Sequence

import numpy as np

#: masks scoring below this are flagged (docs/qc.md: calibration)
SCORE_THRESHOLD = 0.55

#: connected pieces holding less than this share of a mask are fragments
FRAGMENT_SHARE = 0.1

#: |L - R| / mean(L, R) above this is flagged for a structure measured on both sides
MAX_ASYMMETRY = 0.5

#: plausible adult volume (mL) per structure and hemisphere, FreeSurfer naming without side.
#: Deliberately wide bounds around typical adult FreeSurfer volumes (Potvin et al. 2016,
#: NeuroImage 137:9-20; Fischl et al. 2002, Neuron 33:341-355): about half the lowest
#: typical value to 1.5-2 times the highest, so that a flag means a gross error (a mask of
#: the wrong structure, of the whole brain, of nothing), not an unusual brain.
LABEL_RANGES_ML: dict[str, tuple[float, float]] = {
    'Cerebral-White-Matter': (120.0, 400.0),
    'Lateral-Ventricle': (1.0, 100.0),
    'Inf-Lat-Vent': (0.02, 6.0),
    'Cerebellum-White-Matter': (6.0, 30.0),
    'Cerebellum-Cortex': (25.0, 90.0),
    'Thalamus': (3.5, 12.0),
    'Thalamus-Proper': (3.5, 12.0),
    'Caudate': (1.8, 7.0),
    'Putamen': (2.5, 9.0),
    'Pallidum': (0.8, 3.5),
    '3rd-Ventricle': (0.3, 5.0),
    '4th-Ventricle': (0.5, 5.0),
    'Brain-Stem': (12.0, 35.0),
    'Hippocampus': (2.0, 6.5),
    'Amygdala': (0.7, 3.0),
    'CSF': (0.3, 4.0),
    'Accumbens-area': (0.2, 1.2),
    'VentralDC': (2.0, 6.5),
    'choroid-plexus': (0.1, 4.0),
    'Optic-Chiasm': (0.03, 0.8),
    'CC_Posterior': (0.1, 2.5), 'CC_Mid_Posterior': (0.1, 2.5), 'CC_Central': (0.1, 2.5),
    'CC_Mid_Anterior': (0.1, 2.5), 'CC_Anterior': (0.1, 2.5),
    'cortical-parcel': (0.3, 45.0),
}

#: the head size (FreeSurfer eTIV, mL) the ranges above are drawn for; with a head size
#: estimate (``etiv_ml``, :mod:`vpcli.vision.head_size`) a range is scaled by eTIV / this,
#: as structure volumes scale with the head (docs/qc.md "Head size")
REFERENCE_ETIV_ML = 1500.0

#: the cerebral cortex of one hemisphere, used when a target holds 30 or more of its parcels
CORTEX_HEMISPHERE_ML = (150.0, 380.0)


def _base_name(label: str) -> tuple[str, str]:
    """``(structure, side)`` of a FreeSurfer label name: ``Left-Hippocampus`` ->
    ``('Hippocampus', 'left')``, ``ctx-lh-insula`` -> ``('cortical-parcel', 'left')``."""
    if label.startswith('ctx-'):
        return 'cortical-parcel', 'left' if label.startswith('ctx-lh-') else 'right'
    match = re.match(r'(Left|Right)-(.*)', label)
    if match:
        structure = match.group(2)
        return ('cortical-parcel' if structure == 'Cerebral-Cortex' else structure,
                match.group(1).lower())
    return label, 'midline'


def plausible_range(target: str) -> tuple[float, float] | None:
    """The plausible adult volume (mL) of an anatomical target, from its parts; None for
    lesions, unknown names and parts without a range."""
    from vpcli.tasks.ontology import load_ontology
    ontology = load_ontology()
    anatomy = ontology.targets.get(target)
    if anatomy is None:
        return None
    parcels = {'left': 0, 'right': 0}
    low = high = 0.0
    for label in anatomy.labels:
        base, side = _base_name(label)
        if base == 'cortical-parcel':
            parcels[side] += 1
            continue
        if base not in LABEL_RANGES_ML:
            return None
        low, high = low + LABEL_RANGES_ML[base][0], high + LABEL_RANGES_ML[base][1]
    for side, count in parcels.items():
        if count >= 30:
            low, high = low + CORTEX_HEMISPHERE_ML[0], high + CORTEX_HEMISPHERE_ML[1]
        elif count:
            parcel_low, parcel_high = LABEL_RANGES_ML['cortical-parcel']
            low, high = low + count * parcel_low, high + count * parcel_high
    if anatomy.white_matter:  # lobes and territories take part of their hemisphere's WM
        sides = 2 if anatomy.side in ('bilateral', 'midline') else 1
        high += sides * LABEL_RANGES_ML['Cerebral-White-Matter'][1]
    return (round(low, 3), round(high, 3)) if high > 0 else None


def mask_signals(probability, brain_probability=None, target: str = '',
                 affine: np.ndarray | None = None) -> dict[str, Any]:
    """QC signals of one mask (probability > 0.5) from its probability map.

    Args:
        probability: The target's probabilities (numpy or torch, 3D).
        brain_probability: The whole brain's probabilities on the same grid, for the side
            check; None skips it.
        target: The target's name (``left ...`` / ``right ...`` enables the side check).
        affine: Voxel-to-world matrix of the grid (RAS mm); needed for the side check.
    """
    from scipy import ndimage

    p = probability.detach().cpu().numpy() if hasattr(probability, 'detach') else \
        np.asarray(probability)
    p = p.astype(np.float32)
    mask = p > 0.5
    voxels = int(mask.sum())
    signals: dict[str, Any] = {'voxels': voxels}
    if voxels == 0:
        signals.update(confidence=0.0, expected_dice=0.0, edge_uncertainty=None, components=0,
                       largest_component_fraction=0.0, fragment_fraction=0.0, side=None,
                       score=0.0)
        return signals
    confidence = float(p[mask].mean())
    # the Dice the mask would have in expectation if the probabilities were calibrated
    expected_dice = 2 * float(p[mask].sum()) / (float(p.sum()) + voxels)
    edge = float(((p > 0.2) & (p < 0.8)).sum()) / voxels
    labelled, count = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    sizes = np.bincount(labelled.ravel())[1:]
    largest = float(sizes.max()) / voxels
    fragments = float(sizes[sizes < FRAGMENT_SHARE * voxels].sum()) / voxels
    side = None
    words = target.lower().split()
    if brain_probability is not None and affine is not None and words and \
            words[0] in ('left', 'right'):
        brain = brain_probability.detach().cpu().numpy() if hasattr(brain_probability, 'detach') \
            else np.asarray(brain_probability)
        brain = brain > 0.5
        if brain.any():
            def centre_x(region):
                points = np.argwhere(region).mean(0)
                return float(affine[0, :3] @ points + affine[0, 3])
            offset = centre_x(mask) - centre_x(brain)
            side = 'ok' if (offset < 0) == (words[0] == 'left') else 'wrong'
    score = expected_dice * (1 - fragments)
    signals.update(confidence=round(confidence, 4), expected_dice=round(expected_dice, 4),
                   edge_uncertainty=round(edge, 4), components=int(count),
                   largest_component_fraction=round(largest, 4),
                   fragment_fraction=round(fragments, 4), side=side, score=round(score, 4))
    return signals


def assess(description: str, volume_ml: float | None, signals: dict | None,
           name: str | None = None) -> dict[str, Any]:
    """The ``quality`` block of one written mask: signals, plausible range and flags. The
    range is that of the target the mask's description names, else of the name it was
    saved under (``save(roi, "left hippocampus")``)."""
    block: dict[str, Any] = dict(signals or {})
    flags: list[str] = []
    if volume_ml is not None and volume_ml == 0:
        flags.append('empty mask')
    bounds = plausible_range(description.strip().lower())
    if bounds is None and name:
        bounds = plausible_range(' '.join(name.replace('_', ' ').lower().split()))
    etiv = block.get('etiv_ml')
    head = ''
    if etiv:
        if volume_ml:
            block['icv_fraction'] = round(volume_ml / etiv, 6)
        if bounds:
            scale = etiv / REFERENCE_ETIV_ML
            bounds = (round(bounds[0] * scale, 3), round(bounds[1] * scale, 3))
            head = f' for a head of eTIV {etiv:.0f} mL'
    block['plausible_ml'] = list(bounds) if bounds else None
    if bounds and volume_ml is not None and volume_ml > 0 and not \
            bounds[0] <= volume_ml <= bounds[1]:
        flags.append(f'volume {volume_ml:.2f} mL is outside the plausible adult range '
                     f'{bounds[0]:g}-{bounds[1]:g} mL{head}')
    if signals:
        if signals.get('side') == 'wrong':
            flags.append('the mask lies on the other side of the brain')
        score = signals.get('score')
        if signals.get('unmatched_descriptors'):
            flags.append(f'no lesion found matches: {", ".join(signals["unmatched_descriptors"])}; '
                         f'the closest are kept')
        if score is not None and volume_ml and score < SCORE_THRESHOLD:
            flags.append(f'QC score {score:.2f} is below {SCORE_THRESHOLD:.2f} (an uncertain '
                         f'or fragmented mask)')
    block['flags'] = flags
    return block


def asymmetry_warnings(volumes: Sequence[dict]) -> list[str]:
    """Warnings for left/right pairs of one structure whose volumes differ too much."""
    by_name = {v['name'].replace('_', ' ').strip().lower(): v for v in volumes
               if v.get('kind') == 'mask' and v.get('volume_ml')}
    warnings = []
    for name, left in by_name.items():
        if not name.startswith('left '):
            continue
        right = by_name.get('right ' + name[5:])
        if right is None:
            continue
        a, b = float(left['volume_ml']), float(right['volume_ml'])
        asymmetry = abs(a - b) / ((a + b) / 2)
        if math.isfinite(asymmetry) and asymmetry > MAX_ASYMMETRY:
            warnings.append(f'{name[5:]}: left {a:.2f} mL and right {b:.2f} mL differ by '
                            f'{100 * asymmetry:.0f} % (more than {100 * MAX_ASYMMETRY:.0f} %)')
    return warnings
