"""One synthetic case: scans of one or two sessions with ground truth.

:func:`sample_case` is the public entry point (see ``docs/synthesis.md``)::

    case = sample_case(7, split='train', modalities=['T1w', 'FLAIR'], longitudinal=True)
    case.scans[0]          # vpcli.volumes.Scan (img0: T1w, session 01, date)
    case.labels[0]         # vocabulary label map on img0's grid (int32 voxel.Volume)
    case.lesion_maps[0]    # lesion instance ids on img0's grid (0 = none)
    case.component_maps[0] # lesion sub-component codes (lesions.COMPONENTS)
    case.lesions           # SynthLesion per lesion per session
    case.records[0]        # SynthScan: img0 with its label, lesion and component maps

Same seed and arguments -> identical case (numpy and torch generators are derived
from the seed; nothing reads global random state).

This module holds the case records, argument checks and the subject, session and
anatomy phases of :func:`sample_case`; the lesion phases (plans, session-02 regrowth,
canvas lesion maps, lesion descriptions) live in :mod:`vpcli.synth.case_lesions` and
the scan phases (geometry, canvas image, acquisition, ground truth on each scan's
grid; :class:`ScanSpec` and :class:`SynthScan`) in :mod:`vpcli.synth.case_scans`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
from typing import TYPE_CHECKING, Sequence

import numpy as np

from vpcli.synth.acquisition import FULL_RESOLUTION_CANVAS_MM, TrainingResolution
from vpcli.synth.case_lesions import (_canvas_lesion_maps, _describe_lesions,
                                      _lesion_plans_and_masks)
from vpcli.synth.case_scans import ScanSpec, SynthScan, _synthesize_scans
from vpcli.synth.lesions import SynthLesion
from vpcli.volumes import POST_CONTRAST

if TYPE_CHECKING:
    import voxel as vx

    from vpcli.synth.vocabulary import Vocabulary

__all__ = ['ATROPHY_STRUCTURES', 'DEFAULT_LESION_WEIGHTS', 'DEFAULT_MODALITY_WEIGHTS',
           'AnatomyChange', 'ScanSpec', 'SynthCase', 'SynthScan', 'available_sources',
           'sample_case']

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


def _per_scan(field: str, doc: str) -> property:
    """A read-only list of one :class:`SynthScan` field over a case's scans, in order."""
    return property(lambda case: [getattr(record, field) for record in case.records], doc=doc)


@dataclasses.dataclass
class SynthCase:
    """A synthetic case with ground truth, every volume with world geometry.

    The per-scan data lives in ``records`` (one :class:`SynthScan` per scan, so
    scans and their ground truth cannot fall out of step); ``scans``, ``labels``,
    ``lesion_maps``, ``component_maps`` and ``geometry_samples`` are read-only
    per-scan lists derived from it.

    Attributes:
        seed: Seed it was made from.
        split: ``train`` or ``eval``.
        source: Anatomy source name (:data:`vpcli.synth.sources.SOURCES`).
        flipped: Whether the anatomy was mirrored left-right.
        records: Per scan, in order (``img0``, ``img1``, ...), session 01 first: the
            scan with its ground truth (:class:`SynthScan`).
        lesions: One :class:`SynthLesion` per lesion per session.
        sessions: Session labels (``['01']`` or ``['01', '02']``).
        anatomy_changes: Longitudinal anatomy changes (empty for one session).
        canvas_labels: Per session, the label map on the synthesis canvas.
        canvas_lesion_maps: Per session, the lesion instance map on the canvas.
        vocabulary: The label vocabulary.
        scans: Scans in order (``img0``, ``img1``, ...), session 01 first.
        labels: Per scan, the vocabulary label map on that scan's grid (int32).
        lesion_maps: Per scan, lesion instance ids on that scan's grid (int32, 0 = none).
        component_maps: Per scan, lesion sub-component codes (uint8,
            :data:`vpcli.synth.lesions.COMPONENTS`).
        geometry_samples: Per scan, what the geometry draw was (Table 2 row, spacings).
    """
    seed: int
    split: str
    source: str
    flipped: bool
    records: list[SynthScan]
    lesions: list[SynthLesion]
    sessions: list[str]
    anatomy_changes: list[AnatomyChange]
    canvas_labels: list['vx.Volume']
    canvas_lesion_maps: list['vx.Volume']
    vocabulary: 'Vocabulary'

    scans = _per_scan('scan', 'Scans in order (``img0``, ``img1``, ...), session 01 first.')
    labels = _per_scan('labels', "Per scan, the vocabulary label map on that scan's grid.")
    lesion_maps = _per_scan('lesion_map', "Per scan, lesion instance ids on that scan's grid.")
    component_maps = _per_scan('component_map',
                               "Per scan, lesion sub-component codes on that scan's grid.")
    geometry_samples = _per_scan('geometry_sample', 'Per scan, what the geometry draw was.')

    def scan_indices(self, session: str) -> list[int]:
        """Indices of the scans of one session."""
        return [i for i, scan in enumerate(self.scans) if scan.session == session]

    def lesions_in(self, session: str) -> list[SynthLesion]:
        """The lesions of one session."""
        return [lesion for lesion in self.lesions if lesion.session == session]


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

    from vpcli.synth.vocabulary import load_vocabulary

    # every phase below draws from ``rng`` in turn: their order fixes the case of a seed
    if isinstance(seed, np.random.Generator):
        rng, seed_value = seed, -1
    else:
        rng, seed_value = np.random.default_rng(int(seed)), int(seed)
    training, spacing, random_contrast_probability = _validated_settings(
        split, modalities, lesions, training_resolution, random_contrast_probability)
    vocabulary = load_vocabulary()
    source_name, flipped, subject, template = _subject_anatomy(rng, split, source, spacing,
                                                               vocabulary)
    sessions, dates, specs = _session_plan(rng, longitudinal, n_scans, modalities,
                                           contrast_pair, diffusion_pair)
    session_labels, anatomy_changes = _session_anatomy(rng, subject, len(sessions), vocabulary,
                                                       spacing)
    label_arrays = [v.tensor[0].numpy().astype(np.int32) for v in session_labels]
    plans, session_masks = _lesion_plans_and_masks(rng, _lesion_classes(rng, lesions),
                                                   label_arrays, vocabulary, spacing)
    canvas_lesions, canvas_components = _canvas_lesion_maps(plans, session_masks,
                                                            label_arrays[0].shape)
    records, measured = _synthesize_scans(
        rng, sessions=sessions, dates=dates, specs=specs, session_labels=session_labels,
        template=template, plans=plans, session_masks=session_masks,
        canvas_lesions=canvas_lesions, canvas_components=canvas_components,
        vocabulary=vocabulary, spacing=spacing, training=training,
        random_contrast_probability=random_contrast_probability,
        template_probability=template_probability, artefacts=artefacts)
    infos = _describe_lesions(sessions, specs, label_arrays, plans, session_masks,
                              canvas_components, measured, subject.geometry, vocabulary, spacing)
    canvas_lesion_volumes = [subject.new(torch.from_numpy(m)[None], keep_labels=False)
                             for m in canvas_lesions]
    return SynthCase(seed_value, split, source_name, flipped, records, infos, sessions,
                     anatomy_changes, session_labels, canvas_lesion_volumes, vocabulary)


def _validated_settings(split: str, modalities: Sequence[str] | None, lesions,
                        training_resolution: bool | TrainingResolution,
                        random_contrast_probability: float | None
                        ) -> tuple[TrainingResolution | None, float, float]:
    """Check :func:`sample_case` arguments and resolve their defaults.

    Args:
        split: ``train`` or ``eval``.
        modalities: Requested modalities, or None.
        lesions: The ``lesions`` argument (class names are checked when a list).
        training_resolution: True, a :class:`TrainingResolution`, or False.
        random_contrast_probability: Requested probability, or None for the split default.

    Returns:
        The training resolution (None for full resolution), the canvas spacing (mm)
        and the random-contrast probability.

    Raises:
        ValueError: unknown split, modality or lesion class.
    """
    from vpcli.synth import images
    from vpcli.synth import lesions as lesion_lib
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
    return training, spacing, random_contrast_probability


def _subject_anatomy(rng: np.random.Generator, split: str, source: str | None,
                     spacing_mm: float, vocabulary: 'Vocabulary'
                     ) -> tuple[str, bool, 'vx.Volume', 'vx.Volume | None']:
    """The subject: an anatomy source, flipped or not, then affine + smooth deformation.

    Args:
        rng: The case's generator.
        split: ``train`` or ``eval`` (which sources may be drawn).
        source: A forced source name, or None to draw one.
        spacing_mm: Canvas spacing.
        vocabulary: The label vocabulary (for the left-right flip).

    Returns:
        The source name, whether it was flipped, the subject's canvas label map and
        its template image (None when the source has none), moved by one interpolation.

    Raises:
        ValueError: the source is not available for the split.
    """
    from vpcli.synth import images
    names = available_sources(split)
    source_name = source or str(rng.choice(names))
    if source_name not in names:
        raise ValueError(f'source "{source_name}" is not available for split "{split}" '
                         f'(available: {", ".join(names)})')
    _, labels0, template0 = _canvas_source(source_name, spacing_mm)
    flipped = bool(rng.random() < 0.5)
    if flipped:
        flipped_volumes = images.flip_left_right(labels0, vocabulary,
                                                 *([template0] if template0 is not None else []))
        labels0 = flipped_volumes[0]
        template0 = flipped_volumes[1] if template0 is not None else None
    affine, field = images.random_spatial_transform(rng, labels0.geometry)
    subject, *moved = images.apply_spatial_transform(
        labels0, affine, field, *([template0] if template0 is not None else []))
    return source_name, flipped, subject, (moved[0] if moved else None)


def _session_plan(rng: np.random.Generator, longitudinal: bool | None, n_scans: int | None,
                  modalities: Sequence[str] | None, contrast_pair: bool | None,
                  diffusion_pair: bool | None
                  ) -> tuple[list[str], list[dt.date], list[ScanSpec]]:
    """Sessions, their dates, and the scans each session gets.

    Args:
        rng: The case's generator.
        longitudinal: Two sessions, or None to draw (30 %).
        n_scans, modalities, contrast_pair, diffusion_pair: As for :func:`sample_case`.

    Returns:
        Session labels, one date per session, and the scan specs of every session.
    """
    two_sessions = bool(rng.random() < 0.3) if longitudinal is None else bool(longitudinal)
    sessions = ['01', '02'] if two_sessions else ['01']
    first_date = dt.date(2008, 1, 1) + dt.timedelta(days=int(rng.integers(0, 5800)))
    dates = [first_date] + ([first_date + dt.timedelta(days=int(rng.integers(30, 900)))]
                            if two_sessions else [])
    specs = _scan_specs(rng, n_scans, modalities, contrast_pair, diffusion_pair)
    return sessions, dates, specs


def _session_anatomy(rng: np.random.Generator, subject: 'vx.Volume', n_sessions: int,
                     vocabulary: 'Vocabulary', spacing_mm: float
                     ) -> tuple[list['vx.Volume'], list[AnatomyChange]]:
    """Per session, the canvas label map: the subject, then (session 02) a changed copy.

    Args:
        rng: The case's generator.
        subject: Session 01 canvas label map.
        n_sessions: 1 or 2.
        vocabulary: The label vocabulary.
        spacing_mm: Canvas spacing.

    Returns:
        The label map per session and the longitudinal changes (empty for one session).
    """
    session_labels = [subject]
    anatomy_changes = []
    if n_sessions > 1:
        changed, change = _change_anatomy(rng, subject, vocabulary, spacing_mm)
        session_labels.append(changed)
        anatomy_changes.append(change)
    return session_labels, anatomy_changes
