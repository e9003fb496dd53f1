"""One synthetic case: scans of one or two sessions with ground truth.

:func:`sample_case` is the public entry point (see ``docs/synthesis.md``)::

    case = sample_case(7, split='train', modalities=['T1w', 'FLAIR'], longitudinal=True)
    case.scans[0]          # vpcli.volumes.Scan (img0: T1w, session 01, date)
    case.labels[0]         # vocabulary label map on img0's grid (int32 voxel.Volume)
    case.lesion_maps[0]    # lesion instance ids on img0's grid (0 = none)
    case.component_maps[0] # lesion sub-component codes (lesions.COMPONENTS)
    case.lesions           # SynthLesion per lesion per session

Same seed and arguments -> identical case (numpy and torch generators are derived
from the seed; nothing reads global random state).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
from typing import TYPE_CHECKING, Sequence

import numpy as np

from vpcli.synth.acquisition import (FULL_RESOLUTION_CANVAS_MM, ScanGeometrySample,
                                     TrainingResolution, sample_scan_geometry)
from vpcli.synth.lesions import SynthLesion
from vpcli.volumes import POST_CONTRAST

if TYPE_CHECKING:
    import voxel as vx

    from vpcli.synth.vocabulary import Vocabulary
    from vpcli.volumes import Scan

#: modalities :func:`sample_case` draws from when none are given, with weights
DEFAULT_MODALITY_WEIGHTS = {'T1w': 0.25, 'T2w': 0.15, 'FLAIR': 0.2, 'PD': 0.05, 'GRE': 0.08,
                            'DWI': 0.07, 'ADC': 0.05, 'CT': 0.15}
#: lesion classes drawn as the main class, with weights
DEFAULT_LESION_WEIGHTS = {'glioma': 0.16, 'metastasis': 0.12, 'meningioma': 0.1,
                          'infarct': 0.14, 'haemorrhage': 0.1, 'ms_lesion': 0.1, 'wmh': 0.08,
                          'cyst': 0.07, 'abscess': 0.06, 'papilloma': 0.05, 'oedema': 0.02}
#: structures atrophy may shrink (longitudinal pairs)
ATROPHY_STRUCTURES = ('Hippocampus', 'Amygdala', 'Caudate', 'Thalamus', 'Putamen')


@dataclasses.dataclass
class AnatomyChange:
    """A longitudinal anatomy change between the two sessions.

    Attributes:
        kind: ``atrophy`` (a structure shrinks) or ``ventricular_enlargement``.
        label_ids: Vocabulary ids of the structures targeted.
        volume_ml_before: Their total volume in session 01 (canvas, mL).
        volume_ml_after: Their total volume in session 02 (canvas, mL).
    """
    kind: str
    label_ids: tuple[int, ...]
    volume_ml_before: float
    volume_ml_after: float


@dataclasses.dataclass
class SynthCase:
    """A synthetic case with ground truth, every volume with world geometry.

    Attributes:
        seed: Seed it was made from.
        split: ``train`` or ``eval``.
        source: Anatomy source name (:data:`vpcli.synth.sources.SOURCES`).
        flipped: Whether the anatomy was mirrored left-right.
        scans: Scans in order (``img0``, ``img1``, ...), session 01 first.
        labels: Per scan, the vocabulary label map on that scan's grid (int32).
        lesion_maps: Per scan, lesion instance ids on that scan's grid (int32, 0 = none).
        component_maps: Per scan, lesion sub-component codes (uint8,
            :data:`vpcli.synth.lesions.COMPONENTS`).
        lesions: One :class:`SynthLesion` per lesion per session.
        sessions: Session labels (``['01']`` or ``['01', '02']``).
        anatomy_changes: Longitudinal anatomy changes (empty for one session).
        geometry_samples: Per scan, what the geometry draw was (Table 2 row, spacings).
        canvas_labels: Per session, the label map on the synthesis canvas.
        canvas_lesion_maps: Per session, the lesion instance map on the canvas.
        vocabulary: The label vocabulary.
    """
    seed: int
    split: str
    source: str
    flipped: bool
    scans: list['Scan']
    labels: list['vx.Volume']
    lesion_maps: list['vx.Volume']
    component_maps: list['vx.Volume']
    lesions: list[SynthLesion]
    sessions: list[str]
    anatomy_changes: list[AnatomyChange]
    geometry_samples: list[ScanGeometrySample]
    canvas_labels: list['vx.Volume']
    canvas_lesion_maps: list['vx.Volume']
    vocabulary: 'Vocabulary'

    def scan_indices(self, session: str) -> list[int]:
        """Indices of the scans of one session."""
        return [i for i, scan in enumerate(self.scans) if scan.session == session]

    def lesions_in(self, session: str) -> list[SynthLesion]:
        """The lesions of one session."""
        return [lesion for lesion in self.lesions if lesion.session == session]


@dataclasses.dataclass(frozen=True)
class ScanSpec:
    """A scan to make: modality, post-contrast flag, and the pair it shares a grid with."""
    modality: str
    contrast: bool = False
    grid_group: int | None = None


@functools.lru_cache(maxsize=8)
def _canvas_source(name: str, spacing_mm: float):
    from vpcli.synth.images import canvas_labels
    from vpcli.synth.sources import load_source
    source = load_source(name)
    labels = canvas_labels(source.labels, spacing_mm)
    template = None
    if source.template is not None:
        template = source.template.reorient('RAS').resample_like(labels.geometry, mode='linear')
    return source, labels, template


def available_sources(split: str) -> list[str]:
    """Anatomy sources of a split (``train`` or ``eval``)."""
    from vpcli.synth.sources import SOURCES
    return [name for name, which in SOURCES.items() if which == split]


def _scan_specs(rng: np.random.Generator, n_scans: int | None,
                modalities: Sequence[str] | None, contrast_pair: bool | None,
                diffusion_pair: bool | None) -> list[ScanSpec]:
    specs: list[ScanSpec] = []
    if modalities is not None:
        for modality in modalities:
            if modality == POST_CONTRAST:
                specs.append(ScanSpec('T1w', True))
            else:
                specs.append(ScanSpec(modality))
    else:
        count = int(rng.integers(1, 4)) if n_scans is None else n_scans
        names = list(DEFAULT_MODALITY_WEIGHTS)
        weights = np.array([DEFAULT_MODALITY_WEIGHTS[n] for n in names])
        for modality in rng.choice(names, size=count, replace=True, p=weights / weights.sum()):
            specs.append(ScanSpec(str(modality)))
    if contrast_pair is None:
        contrast_pair = modalities is None and rng.random() < 0.25
    if diffusion_pair is None:
        diffusion_pair = modalities is None and rng.random() < 0.2
    group = 0
    if contrast_pair:
        specs = [s for s in specs if not (s.modality == 'T1w')]
        specs += [ScanSpec('T1w', False, group), ScanSpec('T1w', True, group)]
        group += 1
    elif any(s.contrast for s in specs):
        # a post-contrast T1 shares the grid of the first pre-contrast T1, if any
        pre = next((i for i, s in enumerate(specs) if s.modality == 'T1w' and not s.contrast), None)
        post = next(i for i, s in enumerate(specs) if s.contrast)
        if pre is not None:
            specs[pre] = dataclasses.replace(specs[pre], grid_group=group)
            specs[post] = dataclasses.replace(specs[post], grid_group=group)
            group += 1
    if diffusion_pair:
        specs = [s for s in specs if s.modality not in ('DWI', 'ADC')]
        specs += [ScanSpec('DWI', False, group), ScanSpec('ADC', False, group)]
        group += 1
    elif any(s.modality == 'DWI' for s in specs) and any(s.modality == 'ADC' for s in specs):
        dwi = next(i for i, s in enumerate(specs) if s.modality == 'DWI')
        adc = next(i for i, s in enumerate(specs) if s.modality == 'ADC')
        specs[dwi] = dataclasses.replace(specs[dwi], grid_group=group)
        specs[adc] = dataclasses.replace(specs[adc], grid_group=group)
    return specs


def _lesion_classes(rng: np.random.Generator, lesions) -> list[str]:
    """Main lesion classes (before counts/distractors) from the ``lesions`` argument."""
    if lesions is False or lesions == 0:
        return []
    if isinstance(lesions, (list, tuple)):
        return list(lesions)
    if lesions is None and rng.random() < 0.25:
        return []
    names = list(DEFAULT_LESION_WEIGHTS)
    weights = np.array([DEFAULT_LESION_WEIGHTS[n] for n in names])
    main = str(rng.choice(names, p=weights / weights.sum()))
    from vpcli.synth.lesions import lesion_classes
    low, high = lesion_classes()[main]['count']
    chosen = [main] * int(rng.integers(low, high + 1))
    extra = int(rng.integers(0, 3)) if isinstance(lesions, bool) or lesions is None else \
        max(int(lesions) - len(chosen), 0)
    for _ in range(extra):
        chosen.append(str(rng.choice(names, p=weights / weights.sum())))
    return chosen


def _radial_field(geometry: 'vx.AcquisitionGeometry', center_mm: np.ndarray,
                  sigma_mm: float, strength: float) -> 'vx.VectorField':
    """Pull-back displacement ``strength * (x - c) * exp(-|x - c|^2 / 2 sigma^2)``.

    Positive strength samples from farther out, so structures near ``c`` shrink;
    negative strength enlarges them.
    """
    import torch
    import voxel as vx
    grid = geometry.grid('world').double()
    offset = grid - torch.as_tensor(center_mm, dtype=torch.float64)
    weight = torch.exp(-(offset ** 2).sum(-1, keepdim=True) / (2 * sigma_mm ** 2))
    vectors = (strength * offset * weight).permute(3, 0, 1, 2).float()
    return vx.VectorField(vectors, geometry, space='world')


def _change_anatomy(rng: np.random.Generator, labels: 'vx.Volume', vocabulary: 'Vocabulary',
                    spacing_mm: float) -> tuple['vx.Volume', AnatomyChange]:
    """Session-2 anatomy: atrophy of one structure or ventricular enlargement."""
    import torch
    data = labels.tensor[0].numpy()
    geometry = labels.geometry
    if rng.random() < 0.5:
        kind = 'ventricular_enlargement'
        ids = (vocabulary.id('Left-Lateral-Ventricle'), vocabulary.id('Right-Lateral-Ventricle'))
        strength = -float(rng.uniform(0.08, 0.2))
        sigma = 30.0
    else:
        kind = 'atrophy'
        structure = str(rng.choice(ATROPHY_STRUCTURES))
        side = str(rng.choice(['Left', 'Right']))
        ids = (vocabulary.id(f'{side}-{structure}'),)
        strength = float(rng.uniform(0.08, 0.2))
        sigma = 12.0
    mask = np.isin(data, ids)
    voxel_center = np.argwhere(mask).mean(0)
    center = geometry.map(torch.tensor(voxel_center, dtype=geometry.tensor.dtype))
    field = _radial_field(geometry, center.numpy(), sigma, strength)
    changed = labels.transform(field, mode='nearest')
    after = np.isin(changed.tensor[0].numpy(), ids)
    unit = spacing_mm ** 3 / 1000
    return changed, AnatomyChange(kind, tuple(int(i) for i in ids), float(mask.sum() * unit),
                                  float(after.sum() * unit))


def sample_case(seed: int | np.random.Generator, *, split: str = 'train',
                n_scans: int | None = None, modalities: Sequence[str] | None = None,
                longitudinal: bool | None = None, lesions=None,
                contrast_pair: bool | None = None, diffusion_pair: bool | None = None,
                training_resolution: bool | TrainingResolution = True,
                source: str | None = None, random_contrast_probability: float | None = None,
                template_probability: float = 0.3, artefacts: bool = True) -> SynthCase:
    """Make one synthetic case.

    Args:
        seed: Integer seed (or a numpy Generator); same seed and arguments give an
            identical case.
        split: ``train`` (training sources) or ``eval`` (the held-out source).
        n_scans: Scans per session when ``modalities`` is None (default 1-3, plus pairs).
        modalities: Modalities of each session's scans, e.g. ``['T1w', 'FLAIR']``;
            ``'T1w+contrast'`` (:data:`~vpcli.volumes.POST_CONTRAST`) is a post-contrast T1 (shares the grid of a pre-contrast T1).
        longitudinal: Two sessions (default: 30 % of cases).
        lesions: None (random: 75 % of cases have lesions), False/0 (none), an int
            (at least that many lesions, main class random), or a list of class names.
        contrast_pair: Add a pre/post-contrast T1 pair on one grid (default: 25 % when
            ``modalities`` is None).
        diffusion_pair: Add a DWI/ADC pair on one grid (default: 20 % when
            ``modalities`` is None).
        training_resolution: True for the default :class:`TrainingResolution` (2 mm
            canvas, sparsified scans), a custom one, or False for a 1 mm canvas and
            Table 2 geometries as they are.
        source: Force an anatomy source of the split (default: random).
        random_contrast_probability: Chance a scan gets fully random per-label
            intensities (default 0.25 for train, 0 for eval).
        template_probability: Chance a T1w scan of a source with a real image uses
            its template intensities.
        artefacts: Bias field, blur, gamma and noise on scans.

    Returns:
        The case (see :class:`SynthCase`).

    Raises:
        BadInputError: an anatomy package is missing (the message names the pip install).
        ValueError: unknown split, source, modality or lesion class.
    """
    import torch

    from vpcli.synth import images
    from vpcli.synth import lesions as lesion_lib
    from vpcli.synth.vocabulary import load_vocabulary
    from vpcli.volumes import Scan, SourceRef

    if isinstance(seed, np.random.Generator):
        rng, seed_value = seed, -1
    else:
        rng, seed_value = np.random.default_rng(int(seed)), int(seed)
    if split not in ('train', 'eval'):
        raise ValueError(f'split must be "train" or "eval", got "{split}"')
    for modality in modalities or ():
        if modality not in images.TISSUE_MEANS and modality != POST_CONTRAST:
            raise ValueError(f'unknown modality "{modality}" '
                             f'(known: {", ".join(images.TISSUE_MEANS)}, {POST_CONTRAST})')
    for name in (lesions if isinstance(lesions, (list, tuple)) else ()):
        if name not in lesion_lib.lesion_classes():
            raise ValueError(f'unknown lesion class "{name}" '
                             f'(known: {", ".join(lesion_lib.lesion_classes())})')
    training = TrainingResolution() if training_resolution is True else \
        (training_resolution or None)
    spacing = training.canvas_spacing_mm if training else FULL_RESOLUTION_CANVAS_MM
    if random_contrast_probability is None:
        random_contrast_probability = 0.25 if split == 'train' else 0.0
    vocabulary = load_vocabulary()

    names = available_sources(split)
    source_name = source or str(rng.choice(names))
    if source_name not in names:
        raise ValueError(f'source "{source_name}" is not available for split "{split}" '
                         f'(available: {", ".join(names)})')
    _, labels0, template0 = _canvas_source(source_name, spacing)

    # subject anatomy: flip, then affine + smooth deformation (one interpolation)
    flipped = bool(rng.random() < 0.5)
    if flipped:
        flipped_volumes = images.flip_left_right(labels0, vocabulary,
                                                 *([template0] if template0 is not None else []))
        labels0 = flipped_volumes[0]
        template0 = flipped_volumes[1] if template0 is not None else None
    affine, field = images.random_spatial_transform(rng, labels0.geometry)
    subject, *moved = images.apply_spatial_transform(
        labels0, affine, field, *([template0] if template0 is not None else []))
    template = moved[0] if moved else None

    two_sessions = bool(rng.random() < 0.3) if longitudinal is None else bool(longitudinal)
    sessions = ['01', '02'] if two_sessions else ['01']
    first_date = dt.date(2008, 1, 1) + dt.timedelta(days=int(rng.integers(0, 5800)))
    dates = [first_date] + ([first_date + dt.timedelta(days=int(rng.integers(30, 900)))]
                            if two_sessions else [])
    specs = _scan_specs(rng, n_scans, modalities, contrast_pair, diffusion_pair)
    has_contrast_pair = any(s.contrast and s.grid_group is not None for s in specs)
    has_diffusion_pair = any(s.modality == 'DWI' and s.grid_group is not None for s in specs) \
        and any(s.modality == 'ADC' for s in specs)

    # session anatomy
    session_labels = [subject]
    anatomy_changes = []
    if two_sessions:
        changed, change = _change_anatomy(rng, subject, vocabulary, spacing)
        session_labels.append(changed)
        anatomy_changes.append(change)
    label_arrays = [v.tensor[0].numpy().astype(np.int32) for v in session_labels]

    # lesions: plans drawn once on session 01, regrown for session 02
    from scipy import ndimage
    brain = label_arrays[0] > 0
    depth = ndimage.distance_transform_edt(brain) * spacing
    ventricles = np.isin(label_arrays[0], [vocabulary.id('Left-Lateral-Ventricle'),
                                           vocabulary.id('Right-Lateral-Ventricle')])
    ventricle_distance = ndimage.distance_transform_edt(~ventricles) * spacing
    occupied = np.zeros(brain.shape, dtype=bool)
    plans: list[lesion_lib.LesionPlan] = []
    masks0: dict[int, np.ndarray] = {}
    for lesion_class in _lesion_classes(rng, lesions):
        instance = len(plans) + 1
        plan = lesion_lib.draw_lesion_plan(rng, lesion_class, instance, label_arrays[0], spacing,
                                           vocabulary, depth, ventricle_distance, occupied)
        if plan is None:
            continue
        mask = lesion_lib.shape_from_plan(plan, label_arrays[0], vocabulary, occupied=occupied)
        if mask.sum() < 4:
            continue
        plans.append(plan)
        masks0[plan.instance] = mask
        occupied |= ndimage.binary_dilation(mask, iterations=1)
        oedema = lesion_lib.lesion_classes()[lesion_class]['oedema']
        if lesion_class != 'oedema' and rng.random() < oedema[0]:
            child = lesion_lib.draw_lesion_plan(rng, 'oedema', len(plans) + 1, label_arrays[0],
                                                spacing, vocabulary, depth, ventricle_distance,
                                                occupied & ~ndimage.binary_dilation(mask, iterations=1),
                                                parent=plan, parent_mask=mask)
            if child is not None:
                child.parent = plan.instance
                child_mask = lesion_lib.shape_from_plan(child, label_arrays[0], vocabulary,
                                                        occupied=occupied) & ~mask
                child_mask = _grown_shell(child_mask, mask)
                if child_mask.sum() >= 4:
                    plans.append(child)
                    masks0[child.instance] = child_mask
                    occupied |= child_mask
    session_masks = [masks0]
    if two_sessions:
        masks1: dict[int, np.ndarray] = {}
        taken = np.zeros(brain.shape, dtype=bool)
        for plan in plans:
            if plan.parent is not None:
                continue
            plan.change = str(rng.choice(lesion_lib.lesion_classes()[plan.lesion_class]['change']))
            shift = {'growth': -float(rng.uniform(0.2, 0.5)),
                     'shrinkage': float(rng.uniform(0.15, 0.35)), 'stable': 0.0}[plan.change]
            mask = lesion_lib.shape_from_plan(plan, label_arrays[1], vocabulary, shift,
                                              occupied=taken)
            if mask.sum() < 2:
                mask = lesion_lib.shape_from_plan(plan, label_arrays[1], vocabulary, 0.0)
            masks1[plan.instance] = mask
            taken |= ndimage.binary_dilation(mask, iterations=1)
        for plan in plans:
            if plan.parent is None:
                continue
            parent_mask = masks1[plan.parent]
            plan.change = next(p.change for p in plans if p.instance == plan.parent)
            shift = {'growth': -0.2, 'shrinkage': 0.2, 'stable': 0.0}[plan.change]
            mask = lesion_lib.shape_from_plan(plan, label_arrays[1], vocabulary, shift,
                                              occupied=taken) & ~parent_mask
            masks1[plan.instance] = _grown_shell(mask, parent_mask)
            taken |= masks1[plan.instance]
        session_masks.append(masks1)

    # per-session canvas lesion/component maps
    canvas_lesions, canvas_components = [], []
    for masks in session_masks:
        instance_map = np.zeros(brain.shape, dtype=np.int32)
        component_map = np.zeros(brain.shape, dtype=np.uint8)
        for plan in plans:
            mask = masks.get(plan.instance)
            if mask is None:
                continue
            instance_map[mask] = plan.instance
            codes = lesion_lib.components_of(plan, mask)
            component_map[mask] = codes[mask]
        canvas_lesions.append(instance_map)
        canvas_components.append(component_map)

    # scans
    out_scans, out_labels, out_lesions, out_components, out_geometry = [], [], [], [], []
    measured: dict[tuple[str, int], dict[str, float | None]] = {}
    center = subject.geometry.center
    grid_cache: dict[tuple[int, int], tuple] = {}
    ground_truth_cache: dict[tuple, tuple] = {}
    for session_index, session in enumerate(sessions):
        labels_volume = session_labels[session_index]
        for spec in specs:
            key = (session_index, spec.grid_group) if spec.grid_group is not None else None
            if key is not None and key in grid_cache:
                geometry, record = grid_cache[key]
            else:
                geometry, record = sample_scan_geometry(rng, spec.modality, center, training)
                if key is not None:
                    grid_cache[key] = (geometry, record)
            modality_key = POST_CONTRAST if spec.contrast else spec.modality
            use_template = (template is not None and spec.modality == 'T1w'
                            and rng.random() < template_probability)
            if use_template:
                canvas_image = template.tensor[0].numpy().astype(np.float64)
                canvas_image = canvas_image * float(rng.uniform(3, 8))
                # session 02 anatomy changes move the template too
                if session_index == 1:
                    canvas_image = _relabel_template(template, session_labels, rng)
            else:
                random_contrast = (spec.modality not in images.QUANTITATIVE_MODALITIES
                                   and rng.random() < random_contrast_probability)
                means, stds = images.tissue_intensities(rng, spec.modality, vocabulary,
                                                        random_contrast)
                canvas_image = images.render_contrast(rng, labels_volume, means, stds
                                                      ).tensor[0].numpy().astype(np.float64)
            painted = lesion_lib.paint_lesions(rng, canvas_image, plans,
                                               session_masks[session_index],
                                               canvas_components[session_index], modality_key,
                                               spacing)
            canvas = labels_volume.new(torch.from_numpy(painted.astype(np.float32))[None],
                                       keep_labels=False)
            image = images.acquire(rng, canvas, geometry, spec.modality, artefacts=artefacts)
            grid_key = (session_index, spec.grid_group if spec.grid_group is not None
                        else f'scan{len(out_scans)}')
            if grid_key not in ground_truth_cache:
                ground_truth_cache[grid_key] = _ground_truth_on_grid(
                    labels_volume, canvas_lesions[session_index],
                    canvas_components[session_index], geometry)
            label_scan, lesion_scan, component_scan = ground_truth_cache[grid_key]
            targets = {p.instance: lesion_lib.declared_ratio(p, modality_key) for p in plans}
            name = f'img{len(out_scans)}'
            if targets:
                image, ratios = lesion_lib.calibrate_signal(image, lesion_scan, targets)
                for instance, ratio in ratios.items():
                    measured.setdefault((session, instance), {})[name] = ratio
            scan = Scan(volume=image, name=name, modality=spec.modality, date=dates[session_index],
                        session=session, contrast=spec.contrast, sources=(SourceRef(name),))
            out_scans.append(scan)
            out_labels.append(label_scan)
            out_lesions.append(lesion_scan)
            out_components.append(component_scan)
            out_geometry.append(record)

    # lesion descriptors per session
    infos: list[SynthLesion] = []
    unit_ml = spacing ** 3 / 1000
    for session_index, session in enumerate(sessions):
        labels_array = label_arrays[session_index]
        lobe_codes, lobe_names, territory_codes, territory_names = lesion_lib.region_maps(
            labels_array, vocabulary, spacing)
        session_infos = []
        for plan in plans:
            mask = session_masks[session_index].get(plan.instance)
            if mask is None or not mask.any():
                continue
            side, lobe, fractions, territory = lesion_lib.describe_location(
                mask, labels_array, vocabulary, lobe_codes, lobe_names, territory_codes,
                territory_names)
            codes = canvas_components[session_index][mask]
            components_ml = {lesion_lib.COMPONENTS[c]: float((codes == c).sum() * unit_ml)
                             for c in np.unique(codes) if c}
            signal = {m: lesion_lib.SIGNAL_WORDS[s] for m, s in plan.signal.items()}
            ratios = dict(plan.signal_ratio)
            if has_contrast_pair:
                ratios[POST_CONTRAST] = lesion_lib.post_contrast_ratio(plan)
                signal[POST_CONTRAST] = lesion_lib.classify_ratio(ratios[POST_CONTRAST])
            voxel_center = np.argwhere(mask).mean(0)
            center_mm = subject.geometry.map(torch.tensor(voxel_center,
                                                          dtype=subject.geometry.tensor.dtype))
            session_infos.append(SynthLesion(
                instance=plan.instance, session=session, lesion_class=plan.lesion_class,
                parent=plan.parent, side=side, lobe=lobe, lobe_fractions=fractions,
                territory=territory, signal=signal, signal_ratio=ratios,
                measured_signal_ratio=measured.get((session, plan.instance), {}),
                enhancing=plan.enhancing if has_contrast_pair else None,
                restricted_diffusion=plan.restricted if has_diffusion_pair else None,
                volume_ml=float(mask.sum() * unit_ml), components_ml=components_ml,
                size_rank=None, center_mm=tuple(float(c) for c in center_mm),
                change=plan.change if session_index > 0 else None))
        ranked = sorted((i for i in session_infos if i.parent is None),
                        key=lambda i: -i.volume_ml)
        for rank, info in enumerate(ranked, start=1):
            info.size_rank = rank
        infos.extend(session_infos)

    canvas_lesion_volumes = [subject.new(torch.from_numpy(m)[None], keep_labels=False)
                             for m in canvas_lesions]
    return SynthCase(seed_value, split, source_name, flipped, out_scans, out_labels, out_lesions,
                     out_components, infos, sessions, anatomy_changes, out_geometry,
                     session_labels, canvas_lesion_volumes, vocabulary)


def _ground_truth_on_grid(labels: 'vx.Volume', lesion_map: np.ndarray,
                          component_map: np.ndarray, geometry: 'vx.AcquisitionGeometry'):
    """Label, lesion and component maps resampled (nearest) onto a scan grid at once.

    The three maps travel as float channels of one volume (ids up to 2035 are exact in
    float32), so the scan's sampling grid is built once.
    """
    import torch
    stacked = torch.stack([labels.tensor[0].float(), torch.from_numpy(lesion_map).float(),
                           torch.from_numpy(component_map.astype(np.float32))])
    moved = labels.new(stacked, keep_labels=False).resample_like(geometry, mode='nearest')
    values = moved.tensor.round()
    return (moved.new(values[0:1].to(torch.int32)), moved.new(values[1:2].to(torch.int32)),
            moved.new(values[2:3].to(torch.uint8)))


def _grown_shell(oedema: np.ndarray, core: np.ndarray) -> np.ndarray:
    """Oedema touching its core: keep the oedema components adjacent to the core."""
    from scipy import ndimage
    if not oedema.any():
        return oedema
    components, count = ndimage.label(oedema)
    touching = np.unique(components[ndimage.binary_dilation(core, iterations=2) & oedema])
    return np.isin(components, touching[touching > 0])


def _relabel_template(template: 'vx.Volume', session_labels: list['vx.Volume'],
                      rng: np.random.Generator) -> np.ndarray:
    """Template intensities for session 02: voxels whose label changed take the mean
    template intensity of their new label (so atrophy/enlargement shows)."""
    before = session_labels[0].tensor[0].numpy()
    after = session_labels[1].tensor[0].numpy()
    image = template.tensor[0].numpy().astype(np.float64).copy()
    changed = before != after
    for label_id in np.unique(after[changed]):
        same = before == label_id
        if same.any():
            image[changed & (after == label_id)] = image[same].mean()
    return image
