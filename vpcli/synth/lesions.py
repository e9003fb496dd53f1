"""Synthetic lesions (VoxelPrompt App. B.6): shape, placement, sub-components, signal.

* **Shape**: a smooth ellipsoidal fall-off plus multi-scale (Brownian-like) noise,
  thresholded (``f(x) = 1 - |A(x - c)|^2 + roughness * noise(x) > t``); the threshold
  is chosen so the lesion reaches its sampled target volume inside the tissue it may
  occupy, and only the connected piece holding the centre is kept. Lowering the
  threshold of the same field grows the lesion along its own lobulations
  (longitudinal growth); raising it shrinks it.
* **Placement** (anatomical priors, per class in ``data/lesion_classes.json``):
  ``white_matter`` / ``periventricular`` (cerebral white matter; periventricular
  centres within 10 mm of a lateral ventricle), ``grey_white_junction`` (centre in
  cortex, may occupy cortex and white matter), ``territory`` (cortex of one
  approximate arterial territory of one hemisphere plus white matter), ``deep_grey``
  (centre in putamen/thalamus/caudate/pallidum, may occupy any parenchyma),
  ``parenchyma`` (any grey or white matter), ``ventricular`` (ventricles/CSF only),
  ``surface`` (extra-axial: centre in cortex within 4 mm of the brain surface, may
  occupy cortex, CSF and the space outside the brain).
* **Sub-components** (component map codes :data:`COMPONENTS`): a ring lesion has a
  necrotic/cystic core and an enhancing rim; a secondary noise blob inside a lesion
  gives a heterogeneous focus; tumour-like classes get an oedema instance around them
  (class ``oedema``, restricted to white matter, ``parent`` = the tumour).
* **Signal**: per scan modality each lesion is hyper-, hypo- or isointense relative to
  a 5 mm shell around it. Declared ratios are drawn from :data:`SIGNAL_RATIO_RANGES`
  (hyper 1.45-2.2, hypo 0.45-0.68, iso 0.97-1.03), painted relative to the local
  surroundings on the canvas, and finally **calibrated on each scan's own grid after
  partial volume, bias field and noise** (:func:`calibrate_signal`): lesion voxels are
  rescaled until the measured ratio (:func:`signal_ratio`, the same definition as the
  library's ``shell`` + ``mean_intensity``) equals the declared one. So every hyper
  lesion measures >= 1.45 (clears the 1.15 threshold), hypo <= 0.68 (< 0.87), iso
  within 3 %. Enhancement: post-contrast ratio = pre-contrast ratio x 1.5-2.5
  (enhancing) or x 0.98-1.02 (not). Restricted diffusion: DWI hyper and ADC hypo;
  unrestricted lesions never have both.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vpcli.library.characterization import THRESHOLDS
from vpcli.synth.lesion_location import describe_location, region_maps
from vpcli.volumes import POST_CONTRAST, voxel_spacing_mm

if TYPE_CHECKING:
    import voxel as vx

    from vpcli.synth.vocabulary import Vocabulary

#: the import point of the lesion names; the location descriptors (``region_maps``,
#: ``describe_location``) are defined in :mod:`vpcli.synth.lesion_location`
__all__ = ['COMPONENTS', 'COMPONENT_CODES', 'ENHANCEMENT_FACTOR_RANGE', 'ENHANCEMENT_THRESHOLD',
           'HYPER_THRESHOLD', 'HYPO_THRESHOLD', 'NON_ENHANCEMENT_FACTOR_RANGE', 'SHELL_MM',
           'SIGNAL_RATIO_RANGES', 'SIGNAL_WORDS', 'TERRITORY_CHOICES', 'LesionPlan', 'SynthLesion', 'allowed_mask',
           'calibrate_signal', 'classify_ratio', 'components_of', 'declared_ratio',
           'describe_location', 'draw_lesion_plan', 'lesion_classes', 'multiscale_noise',
           'paint_lesions', 'post_contrast_ratio', 'region_maps', 'shape_from_plan',
           'shell_array', 'signal_ratio']

#: component map codes (0 = no lesion)
COMPONENTS = {1: 'solid', 2: 'enhancing', 3: 'necrotic', 4: 'oedema', 5: 'focus'}
COMPONENT_CODES = {name: code for code, name in COMPONENTS.items()}

#: declared signal ratio ranges (lesion mean / 5 mm shell mean) per descriptor
SIGNAL_RATIO_RANGES = {'hyper': (1.45, 2.2), 'hypo': (0.45, 0.68), 'iso': (0.97, 1.03)}
#: the library's classifier thresholds are the contract the descriptors must satisfy;
#: they are defined once, in vpcli.library.characterization.THRESHOLDS
HYPER_THRESHOLD = THRESHOLDS.hyperintense_above
HYPO_THRESHOLD = THRESHOLDS.hypointense_below
ENHANCEMENT_THRESHOLD = THRESHOLDS.enhancing_above
ENHANCEMENT_FACTOR_RANGE = (1.5, 2.5)
NON_ENHANCEMENT_FACTOR_RANGE = (0.98, 1.02)
#: thickness of the surrounding-tissue shell (mm)
SHELL_MM = THRESHOLDS.surrounding_margin_mm

SIGNAL_WORDS = {'hyper': 'hyperintense', 'hypo': 'hypointense', 'iso': 'isointense'}

#: a territorial lesion's arterial territory, drawn uniformly from this list (MCA twice as
#: often); the dense stage draws from the same list
TERRITORY_CHOICES = ('MCA', 'MCA', 'ACA', 'PCA')


@functools.lru_cache(maxsize=1)
def lesion_classes() -> dict[str, dict]:
    """Class name -> generation parameters, from ``data/lesion_classes.json``."""
    path = Path(__file__).parent / 'data' / 'lesion_classes.json'
    table = json.loads(path.read_text())
    table.pop('_doc', None)
    return table


def classify_ratio(ratio: float) -> str:
    """``hyperintense`` / ``hypointense`` / ``isointense`` by the library's thresholds."""
    if ratio > HYPER_THRESHOLD:
        return 'hyperintense'
    if ratio < HYPO_THRESHOLD:
        return 'hypointense'
    return 'isointense'


@dataclasses.dataclass
class SynthLesion:
    """Ground-truth description of one lesion instance in one session.

    Attributes:
        instance: Instance id (voxel value in the lesion maps); the same lesion keeps
            its id across sessions.
        session: Session label (``01``, ``02``).
        lesion_class: ``glioma``, ``metastasis``, ``meningioma``, ``infarct``,
            ``haemorrhage``, ``ms_lesion``, ``wmh``, ``cyst``, ``abscess``,
            ``papilloma`` or ``oedema``.
        parent: Instance id of the lesion an oedema belongs to (None otherwise).
        side: ``left``, ``right`` or ``midline`` (majority of its voxels by the
            side of the anatomy labels under it; midline structures count as midline).
        lobe: Lobe/region with the largest overlap (``frontal``, ``parietal``,
            ``temporal``, ``occipital``, ``cingulate``, ``insula``, ``deep_grey``,
            ``ventricles``, ``cerebellum``, ``brainstem``, ``extra_axial``); white
            matter counts for the lobe of its nearest cortical parcel.
        lobe_fractions: Fraction of the lesion's voxels per lobe/region.
        territory: Approximate arterial territory with the largest overlap (``ACA``,
            ``MCA``, ``PCA``, ``vertebrobasilar``) or None.
        signal: Modality -> ``hyperintense`` / ``hypointense`` / ``isointense``
            (declared; post-contrast T1 is under :data:`~vpcli.volumes.POST_CONTRAST`).
        signal_ratio: Modality -> declared lesion/shell mean ratio.
        measured_signal_ratio: Scan name -> ratio measured on that scan after synthesis
            (None where the lesion has no voxel on the scan's grid).
        enhancing: True/False when the case has a pre/post-contrast pair; else None.
        restricted_diffusion: True/False when the case has a DWI/ADC pair; else None.
        volume_ml: Lesion volume on the synthesis canvas (mL).
        components_ml: Sub-component name -> volume (mL).
        size_rank: 1 = largest lesion of its session (oedema instances are not ranked).
        center_mm: Centre of mass, scanner RAS mm.
        change: Longitudinal change from the previous session (``growth``,
            ``shrinkage``, ``stable``), None in the first session.
    """
    instance: int
    session: str
    lesion_class: str
    parent: int | None
    side: str
    lobe: str
    lobe_fractions: dict[str, float]
    territory: str | None
    signal: dict[str, str]
    signal_ratio: dict[str, float]
    measured_signal_ratio: dict[str, float | None]
    enhancing: bool | None
    restricted_diffusion: bool | None
    volume_ml: float
    components_ml: dict[str, float]
    size_rank: int | None
    center_mm: tuple[float, float, float]
    change: str | None = None


@dataclasses.dataclass
class LesionPlan:
    """A lesion's random draw, kept so later sessions regrow the same shape.

    Attributes (internal): the noise field on a local box of the canvas, the threshold,
    the allowed-tissue rule, declared signals, ring/focus sub-fields.
    """
    instance: int
    lesion_class: str
    parent: int | None
    box: tuple[slice, slice, slice]
    field: np.ndarray
    threshold: float
    allowed_tissues: tuple[str, ...]
    allowed_ids: tuple[int, ...] | None
    core_threshold: float | None
    focus_field: np.ndarray | None
    signal: dict[str, str]
    signal_ratio: dict[str, float]
    enhancing: bool
    restricted: bool
    enhancement_factor: float
    component_factor: dict[str, float]
    change: str | None = None


# -----------------------------------------------------------------------------
# measurement
# -----------------------------------------------------------------------------

def _spacing(geometry: 'vx.AcquisitionGeometry') -> np.ndarray:
    return voxel_spacing_mm(geometry)


def shell_array(inside: np.ndarray, spacing_mm, shell_mm: float = SHELL_MM) -> np.ndarray:
    """Voxels within ``shell_mm`` (centre-to-centre, world mm) of ``inside`` but not in it.

    The grids here have orthogonal voxel axes (rotation times spacing), so a Euclidean
    distance transform with the voxel spacing gives world distances. Same definition
    as the library's ``shell(mask, mm)``.
    """
    from scipy import ndimage
    if not inside.any():
        return np.zeros_like(inside)
    pad = np.ceil(shell_mm / np.asarray(spacing_mm)).astype(int) + 1
    where = np.argwhere(inside)
    low = np.maximum(where.min(0) - pad, 0)
    high = np.minimum(where.max(0) + pad + 1, inside.shape)
    box = tuple(slice(a, b) for a, b in zip(low, high))
    local = inside[box]
    distance = ndimage.distance_transform_edt(~local, sampling=spacing_mm)
    out = np.zeros_like(inside)
    out[box] = (distance <= shell_mm + 1e-6) & ~local
    return out


def signal_ratio(image: 'vx.Volume', mask: 'vx.Volume | np.ndarray',
                 shell_mm: float = SHELL_MM) -> float | None:
    """Mean intensity inside a mask over the mean in a ``shell_mm`` shell around it.

    Args:
        image: Scan image.
        mask: Boolean mask on the image's grid (Volume or array).
        shell_mm: Shell thickness (mm).

    Returns:
        The ratio, or None when the mask is empty or the shell mean is not positive.
    """
    data = image.tensor[0].cpu().numpy()
    inside = mask if isinstance(mask, np.ndarray) else mask.tensor[0].cpu().numpy().astype(bool)
    if not inside.any():
        return None
    around = shell_array(inside, _spacing(image.geometry), shell_mm)
    if not around.any():
        return None
    shell_mean = float(data[around].mean())
    if shell_mean <= 0:
        return None
    return float(data[inside].mean()) / shell_mean


def calibrate_signal(image: 'vx.Volume', lesion_map: 'vx.Volume',
                     targets: dict[int, float], iterations: int = 6,
                     tolerance: float = 0.005) -> tuple['vx.Volume', dict[int, float | None]]:
    """Rescale each lesion's voxels until its measured signal ratio equals its target.

    Neighbouring lesions sit in each other's shells (a tumour and its oedema), so the
    correction is repeated until every ratio is within ``tolerance`` (relative).

    Args:
        image: Scan image (after partial volume, bias field and noise).
        lesion_map: Instance ids on the image's grid.
        targets: Instance id -> declared ratio.
        iterations: Maximum correction passes.
        tolerance: Relative error accepted.

    Returns:
        The corrected image and the measured ratio per instance (None when absent).
    """
    import torch
    data = image.tensor[0].cpu().numpy().astype(np.float64).copy()
    instances = lesion_map.tensor[0].cpu().numpy()
    spacing = _spacing(image.geometry)
    masks = {k: instances == k for k in targets}
    shells = {k: shell_array(m, spacing) for k, m in masks.items() if m.any()}
    measured: dict[int, float | None] = {k: None for k in targets}
    for _ in range(iterations):
        worst = 0.0
        for k, target in targets.items():
            if k not in shells or not shells[k].any():
                continue
            shell_mean = data[shells[k]].mean()
            inside_mean = data[masks[k]].mean()
            if shell_mean <= 0 or inside_mean <= 0:
                # shift instead of scale when the lesion is (near) zero
                data[masks[k]] += target * max(shell_mean, 1e-3) - inside_mean
                worst = 1.0
                continue
            ratio = inside_mean / shell_mean
            worst = max(worst, abs(ratio / target - 1))
            data[masks[k]] *= target / ratio
        if worst <= tolerance:
            break
    for k in targets:
        if k in shells and shells[k].any():
            shell_mean = data[shells[k]].mean()
            measured[k] = float(data[masks[k]].mean() / shell_mean) if shell_mean > 0 else None
    return image.new(torch.from_numpy(data.astype(np.float32))[None]), measured


# -----------------------------------------------------------------------------
# shapes and placement
# -----------------------------------------------------------------------------

def multiscale_noise(rng: np.random.Generator, shape: tuple[int, ...], spacing_mm: float,
                     radius_mm: float) -> np.ndarray:
    """Brownian-like noise: white noise smoothed at radius/2, /4, /8 with amplitudes
    1, 1/2, 1/4 (a 1/f spectrum), normalised to unit standard deviation."""
    from scipy import ndimage
    total = np.zeros(shape)
    for level in range(3):
        sigma_vox = max(radius_mm / (2 ** (level + 1)) / spacing_mm, 0.5)
        layer = ndimage.gaussian_filter(rng.standard_normal(shape), sigma_vox)
        layer /= layer.std() + 1e-9
        total += layer * 0.5 ** level
    return total / (total.std() + 1e-9)


def _placement_masks(placement: str, labels: np.ndarray, vocabulary: 'Vocabulary',
                     brain_depth_mm: np.ndarray, ventricle_distance_mm: np.ndarray,
                     rng: np.random.Generator) -> tuple[np.ndarray, tuple[str, ...],
                                                        tuple[int, ...] | None]:
    """Candidate centre voxels, allowed tissue classes and (optional) allowed label ids."""
    from vpcli.synth.vocabulary import CSF_TISSUES, PARENCHYMA_TISSUES

    def tissue(*names):
        return np.isin(labels, vocabulary.ids_with_tissue(*names))

    deep = brain_depth_mm > 3.0
    if placement == 'white_matter':
        return tissue('cerebral_wm') & (brain_depth_mm > 8), ('cerebral_wm',), None
    if placement == 'periventricular':
        centre = tissue('cerebral_wm') & (ventricle_distance_mm < 10) & deep
        return centre, ('cerebral_wm',), None
    if placement == 'grey_white_junction':
        return tissue('cortex') & deep, ('cortex', 'cerebral_wm'), None
    if placement == 'territory':
        territory = str(rng.choice(list(TERRITORY_CHOICES)))
        side = str(rng.choice(['left', 'right']))
        ids = [i for i in vocabulary.ids_in_group(f'territory:{territory}')
               if vocabulary.labels[i].side == side and vocabulary.labels[i].tissue == 'cortex']
        allowed = tuple(ids) + tuple(i for i in vocabulary.ids_with_tissue('cerebral_wm')
                                     if vocabulary.labels[i].side == side)
        return np.isin(labels, ids) & deep, (), allowed
    if placement == 'deep_grey':
        return tissue('putamen', 'thalamus', 'caudate', 'pallidum') & deep, PARENCHYMA_TISSUES, None
    if placement == 'parenchyma':
        return tissue(*PARENCHYMA_TISSUES) & (brain_depth_mm > 6), PARENCHYMA_TISSUES, None
    if placement == 'ventricular':
        lateral = np.isin(labels, [vocabulary.id('Left-Lateral-Ventricle'),
                                   vocabulary.id('Right-Lateral-Ventricle')])
        return lateral, CSF_TISSUES, None
    if placement == 'surface':
        return tissue('cortex') & (brain_depth_mm < 4), ('cortex', 'csf', 'background'), None
    raise ValueError(f'unknown lesion placement "{placement}"')


def allowed_mask(labels: np.ndarray, vocabulary: 'Vocabulary', tissues: tuple[str, ...],
                 ids: tuple[int, ...] | None) -> np.ndarray:
    """Voxels a lesion may occupy: label ids or tissue classes (``background`` = 0)."""
    if ids is not None:
        return np.isin(labels, ids)
    mask = np.isin(labels, vocabulary.ids_with_tissue(*tissues))
    if 'background' in tissues:
        mask |= labels == 0
    return mask


def _box_around(center: np.ndarray, half: int, shape: tuple[int, ...]):
    low = np.maximum(center - half, 0)
    high = np.minimum(center + half + 1, shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(low, high))


def _keep_component(mask: np.ndarray, seed: tuple[int, ...] | None) -> np.ndarray:
    from scipy import ndimage
    if not mask.any():
        return mask
    components, count = ndimage.label(mask)
    if count <= 1:
        return mask
    keep = components[seed] if seed is not None and components[seed] > 0 else \
        int(np.argmax(np.bincount(components.ravel())[1:]) + 1)
    return components == keep


def shape_from_plan(plan: LesionPlan, labels: np.ndarray, vocabulary: 'Vocabulary',
                    threshold_shift: float = 0.0, occupied: np.ndarray | None = None,
                    ) -> np.ndarray:
    """The lesion mask (full canvas array) of a plan, optionally grown (negative shift)."""
    local_labels = labels[plan.box]
    allowed = allowed_mask(local_labels, vocabulary, plan.allowed_tissues, plan.allowed_ids)
    if occupied is not None:
        allowed &= ~occupied[plan.box]
    local = (plan.field > plan.threshold + threshold_shift) & allowed
    centre = tuple(int(s // 2) for s in plan.field.shape)
    local = _keep_component(local, centre if local[centre] else None)
    out = np.zeros(labels.shape, dtype=bool)
    out[plan.box] = local
    return out


def draw_lesion_plan(rng: np.random.Generator, lesion_class: str, instance: int,
                     labels: np.ndarray, spacing_mm: float, vocabulary: 'Vocabulary',
                     brain_depth_mm: np.ndarray, ventricle_distance_mm: np.ndarray,
                     occupied: np.ndarray, parent: 'LesionPlan | None' = None,
                     parent_mask: np.ndarray | None = None) -> LesionPlan | None:
    """Draw one lesion's location, size, shape field and signals.

    Returns None when the anatomy has no valid place for it.
    """
    params = lesion_classes()[lesion_class]
    if parent is not None:
        # oedema: centred on its tumour, larger, white matter only
        where = np.argwhere(parent_mask)
        center = np.round(where.mean(0)).astype(int)
        parent_ml = parent_mask.sum() * spacing_mm ** 3 / 1000
        scale = rng.uniform(params.get('_scale_min', 1.4), 2.2)
        volume_ml = parent_ml * scale ** 3
        tissues, ids = ('cerebral_wm',), None
    else:
        centres, tissues, ids = _placement_masks(params['placement'], labels, vocabulary,
                                                 brain_depth_mm, ventricle_distance_mm, rng)
        centres &= ~occupied
        candidates = np.argwhere(centres)
        if len(candidates) == 0:
            return None
        center = candidates[int(rng.integers(len(candidates)))]
        low, high = params['volume_ml']
        volume_ml = float(np.exp(rng.uniform(np.log(low), np.log(high))))
    radius_mm = (3 * volume_ml * 1000 / (4 * np.pi)) ** (1 / 3)
    half = int(np.ceil(2.6 * radius_mm / spacing_mm)) + 2
    box = _box_around(center, half, labels.shape)
    shape = tuple(s.stop - s.start for s in box)
    grids = np.meshgrid(*[(np.arange(s.start, s.stop) - c) * spacing_mm
                          for s, c in zip(box, center)], indexing='ij')
    offsets = np.stack(grids, -1)
    rotation = _random_rotation(rng)
    elongation = rng.uniform(*params['elongation'])
    axes = radius_mm * np.array([elongation, 1.0, 1.0]) / elongation ** (1 / 3)
    local = offsets @ rotation.T / axes
    field = 1 - (local ** 2).sum(-1) + params['roughness'] * multiscale_noise(
        rng, shape, spacing_mm, radius_mm)
    # threshold so the allowed part reaches the target volume (within the box)
    allowed = allowed_mask(labels[box], vocabulary, tissues, ids) & ~occupied[box]
    if parent_mask is not None:
        allowed |= parent_mask[box]
    target_voxels = max(int(round(volume_ml * 1000 / spacing_mm ** 3)), 4)
    values = np.sort(field[allowed])[::-1]
    if len(values) < 4:
        return None
    threshold = float(values[min(target_voxels, len(values) - 1)])
    threshold = max(threshold, -0.5)

    ring = rng.random() < params['ring']
    focus = rng.random() < params['focus']
    core_threshold = None
    if ring:
        inner = values[:target_voxels]
        core_threshold = float(np.quantile(inner, rng.uniform(0.55, 0.8))) if len(inner) else None
    focus_field = None
    if focus:
        focus_field = multiscale_noise(rng, shape, spacing_mm, radius_mm / 2)

    signal = {m: str(rng.choice(options)) for m, options in params['signal'].items()}
    restricted = bool(rng.random() < params['restricted'])
    if restricted:
        signal['DWI'], signal['ADC'] = 'hyper', 'hypo'
    elif signal['DWI'] == 'hyper' and signal['ADC'] == 'hypo':
        signal['ADC'] = 'iso'
    enhancing = bool(rng.random() < params['enhancing'])
    ratios = {m: float(rng.uniform(*SIGNAL_RATIO_RANGES[s])) for m, s in signal.items()}
    factor_range = ENHANCEMENT_FACTOR_RANGE if enhancing else NON_ENHANCEMENT_FACTOR_RANGE
    component_factor = {'necrotic': float(rng.uniform(0.6, 0.85)),
                        'focus': float(rng.uniform(0.75, 1.3))}
    return LesionPlan(instance, lesion_class, None if parent is None else parent.instance, box,
                      field, threshold, tuple(tissues), None if ids is None else tuple(ids),
                      core_threshold, focus_field, signal, ratios, enhancing, restricted,
                      float(rng.uniform(*factor_range)), component_factor)


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    return q * np.sign(np.diag(r))


def components_of(plan: LesionPlan, mask: np.ndarray) -> np.ndarray:
    """Component codes (see :data:`COMPONENTS`) inside one lesion's mask (full array)."""
    codes = np.zeros(mask.shape, dtype=np.uint8)
    if plan.lesion_class == 'oedema':
        codes[mask] = COMPONENT_CODES['oedema']
        return codes
    codes[mask] = COMPONENT_CODES['solid']
    local_mask = mask[plan.box]
    local = codes[plan.box]
    if plan.core_threshold is not None:
        core = local_mask & (plan.field > plan.core_threshold)
        local[local_mask] = COMPONENT_CODES['enhancing']
        local[core] = COMPONENT_CODES['necrotic']
    if plan.focus_field is not None:
        focus = local_mask & (plan.focus_field > 1.0) & (local == COMPONENT_CODES['solid'])
        local[focus] = COMPONENT_CODES['focus']
    codes[plan.box] = local
    return codes


# -----------------------------------------------------------------------------
# painting and descriptors
# -----------------------------------------------------------------------------

#: modalities where a necrotic/cystic core is brighter than the lesion body (fluid)
_FLUID_BRIGHT = ('T2w', 'FLAIR', 'PD', 'ADC', 'GRE')


def declared_ratio(plan: LesionPlan, modality_key: str) -> float:
    """Declared lesion/shell ratio for a modality key (:data:`~vpcli.volumes.POST_CONTRAST`: post-contrast T1)."""
    if modality_key == POST_CONTRAST:
        return post_contrast_ratio(plan)
    return plan.signal_ratio[modality_key]


def post_contrast_ratio(plan: LesionPlan) -> float:
    """Post-contrast ratio = pre ratio x enhancement factor.

    Enhancing lesions are at least 1.45 after contrast (bright, clear of the 1.15
    threshold; the factor only goes up, so it stays >= 1.5); non-enhancing ones keep
    their pre-contrast ratio within 2 %, so their descriptor does not change.
    """
    ratio = plan.signal_ratio['T1w'] * plan.enhancement_factor
    if plan.enhancing:
        ratio = max(ratio, 1.45)
    return ratio


def paint_lesions(rng: np.random.Generator, image: np.ndarray, plans: list[LesionPlan],
                  masks: dict[int, np.ndarray], components: np.ndarray, modality_key: str,
                  spacing_mm: float) -> np.ndarray:
    """In-paint lesions into a canvas image relative to their surroundings.

    Each lesion's mean is its declared ratio times the mean of a 5 mm shell around
    it (oedema first, so a tumour is painted relative to its oedema); the interior
    gets a multiplicative texture (multi-scale noise, 6 %) and component factors
    (necrotic core darker, or brighter in fluid-bright modalities; enhancing rim
    brighter after contrast; a focus brighter or darker).
    """
    image = image.copy()
    base_modality = 'T1w' if modality_key == POST_CONTRAST else modality_key
    order = sorted(plans, key=lambda p: p.lesion_class != 'oedema')
    for plan in order:
        mask = masks.get(plan.instance)
        if mask is None or not mask.any():
            continue
        around = shell_array(mask, np.full(3, spacing_mm))
        if not around.any():
            continue
        reference = float(image[around].mean())
        if reference <= 0:
            reference = float(np.abs(image[mask]).mean()) + 1e-3
        target = declared_ratio(plan, modality_key) * reference
        local_mask = mask[plan.box]
        texture = 1 + 0.06 * multiscale_noise(rng, local_mask.shape, spacing_mm, 6.0)
        values = np.full(local_mask.shape, target) * texture
        codes = components[plan.box]
        necrotic = plan.component_factor['necrotic']
        if base_modality in _FLUID_BRIGHT:
            necrotic = 1 / necrotic
        values[codes == COMPONENT_CODES['necrotic']] *= necrotic
        values[codes == COMPONENT_CODES['focus']] *= plan.component_factor['focus']
        if modality_key == POST_CONTRAST and plan.enhancing:
            values[codes == COMPONENT_CODES['enhancing']] *= 1.3
        # keep the lesion mean at the target after component factors
        values *= target / max(float(values[local_mask].mean()), 1e-9)
        region = image[plan.box]
        region[local_mask] = values[local_mask]
        image[plan.box] = region
    return image
