"""Scan phases of :func:`vpcli.synth.cases.sample_case`.

:class:`ScanSpec` says which scans a session gets; :func:`_synthesize_scans` makes
each one: its acquisition grid (:func:`_scan_geometry`, drawn once per grid group),
its lesion-free canvas image (:func:`_canvas_image`), painted lesions, acquisition
and signal calibration, and its ground truth resampled onto its grid
(:func:`_ground_truth_on_grid`), kept together in a :class:`SynthScan`. Both
classes are re-exported by :mod:`vpcli.synth.cases`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import TYPE_CHECKING

import numpy as np

from vpcli.synth.acquisition import ScanGeometrySample, TrainingResolution, sample_scan_geometry
from vpcli.volumes import POST_CONTRAST

if TYPE_CHECKING:
    import voxel as vx

    from vpcli.synth.lesions import LesionPlan
    from vpcli.synth.vocabulary import Vocabulary
    from vpcli.volumes import Scan


@dataclasses.dataclass(frozen=True)
class SynthScan:
    """One synthesized scan with its ground truth, all on the scan's grid.

    Attributes:
        scan: The scan (``img0``, ``img1``, ...).
        labels: The vocabulary label map (int32).
        lesion_map: Lesion instance ids (int32, 0 = none).
        component_map: Lesion sub-component codes (uint8,
            :data:`vpcli.synth.lesions.COMPONENTS`).
        geometry_sample: What the geometry draw was (Table 2 row, spacings).
    """
    scan: 'Scan'
    labels: 'vx.Volume'
    lesion_map: 'vx.Volume'
    component_map: 'vx.Volume'
    geometry_sample: ScanGeometrySample


@dataclasses.dataclass(frozen=True)
class ScanSpec:
    """A scan to make: modality, post-contrast flag, and the pair it shares a grid with."""
    modality: str
    contrast: bool = False
    grid_group: int | None = None


def _synthesize_scans(rng: np.random.Generator, *, sessions: list[str], dates: list[dt.date],
                      specs: list[ScanSpec], session_labels: list['vx.Volume'],
                      template: 'vx.Volume | None', plans: list['LesionPlan'],
                      session_masks: list[dict[int, np.ndarray]],
                      canvas_lesions: list[np.ndarray], canvas_components: list[np.ndarray],
                      vocabulary: 'Vocabulary', spacing: float,
                      training: TrainingResolution | None, random_contrast_probability: float,
                      template_probability: float, artefacts: bool
                      ) -> tuple[list[SynthScan], dict[tuple[str, int], dict[str, float | None]]]:
    """Every session's scans, each with its ground truth resampled onto its grid.

    Args:
        rng: The case's generator.
        sessions, dates: Session labels and their dates.
        specs: The scans each session gets (pairs share a grid within a session).
        session_labels: Per session, the canvas label map.
        template: The subject's template image, or None.
        plans, session_masks: The lesion plans and, per session, their canvas masks.
        canvas_lesions, canvas_components: Per session, the canvas lesion maps.
        vocabulary: The label vocabulary.
        spacing: Canvas spacing (mm).
        training: The training resolution, or None.
        random_contrast_probability, template_probability, artefacts: As for
            :func:`~vpcli.synth.cases.sample_case`.

    Returns:
        One :class:`SynthScan` per scan (``img0``, ``img1``, ...), and the measured
        lesion signal ratio per (session, instance) per scan name.
    """
    import torch

    from vpcli.synth import images
    from vpcli.synth import lesions as lesion_lib
    from vpcli.volumes import Scan, SourceRef
    records: list[SynthScan] = []
    measured: dict[tuple[str, int], dict[str, float | None]] = {}
    center = session_labels[0].geometry.center
    grid_cache: dict[tuple[int, int], tuple] = {}
    ground_truth_cache: dict[tuple, tuple] = {}
    for session_index, session in enumerate(sessions):
        labels_volume = session_labels[session_index]
        for spec in specs:
            geometry, sample = _scan_geometry(rng, spec, session_index, center, training,
                                              grid_cache)
            modality_key = POST_CONTRAST if spec.contrast else spec.modality
            canvas_image = _canvas_image(rng, spec, session_index, session_labels, template,
                                         vocabulary, template_probability,
                                         random_contrast_probability)
            painted = lesion_lib.paint_lesions(rng, canvas_image, plans,
                                               session_masks[session_index],
                                               canvas_components[session_index], modality_key,
                                               spacing)
            canvas = labels_volume.new(torch.from_numpy(painted.astype(np.float32))[None],
                                       keep_labels=False)
            image = images.acquire(rng, canvas, geometry, spec.modality, artefacts=artefacts)
            grid_key = (session_index, spec.grid_group if spec.grid_group is not None
                        else f'scan{len(records)}')
            if grid_key not in ground_truth_cache:
                ground_truth_cache[grid_key] = _ground_truth_on_grid(
                    labels_volume, canvas_lesions[session_index],
                    canvas_components[session_index], geometry)
            label_scan, lesion_scan, component_scan = ground_truth_cache[grid_key]
            targets = {p.instance: lesion_lib.declared_ratio(p, modality_key) for p in plans}
            name = f'img{len(records)}'
            if targets:
                image, ratios = lesion_lib.calibrate_signal(image, lesion_scan, targets)
                for instance, ratio in ratios.items():
                    measured.setdefault((session, instance), {})[name] = ratio
            scan = Scan(volume=image, name=name, modality=spec.modality, date=dates[session_index],
                        session=session, contrast=spec.contrast, sources=(SourceRef(name),))
            records.append(SynthScan(scan, label_scan, lesion_scan, component_scan, sample))
    return records, measured


def _scan_geometry(rng: np.random.Generator, spec: ScanSpec, session_index: int,
                   center_mm, training: TrainingResolution | None,
                   grid_cache: dict[tuple[int, int], tuple]
                   ) -> tuple['vx.AcquisitionGeometry', ScanGeometrySample]:
    """A scan's acquisition grid; a grid group draws it once per session.

    Args:
        rng: The case's generator (not drawn from when the group's grid is cached).
        spec: The scan to make.
        session_index: 0 or 1.
        center_mm: Where the field of view is centred (world mm).
        training: The training resolution, or None.
        grid_cache: Grids drawn so far per (session index, grid group); updated.

    Returns:
        The grid and what the geometry draw was.
    """
    key = (session_index, spec.grid_group) if spec.grid_group is not None else None
    if key is not None and key in grid_cache:
        return grid_cache[key]
    geometry, sample = sample_scan_geometry(rng, spec.modality, center_mm, training)
    if key is not None:
        grid_cache[key] = (geometry, sample)
    return geometry, sample


def _canvas_image(rng: np.random.Generator, spec: ScanSpec, session_index: int,
                  session_labels: list['vx.Volume'], template: 'vx.Volume | None',
                  vocabulary: 'Vocabulary', template_probability: float,
                  random_contrast_probability: float) -> np.ndarray:
    """One scan's lesion-free intensities on the canvas (float64).

    A T1w scan may use the source's template image (scaled; in session 02 relabelled
    where the anatomy changed); otherwise per-label intensities are drawn and rendered.

    Args:
        rng: The case's generator.
        spec: The scan to make.
        session_index: 0 or 1.
        session_labels: Per session, the canvas label map.
        template: The subject's template image, or None.
        vocabulary: The label vocabulary.
        template_probability, random_contrast_probability: As for
            :func:`~vpcli.synth.cases.sample_case`.

    Returns:
        The canvas image.
    """
    from vpcli.synth import images
    use_template = (template is not None and spec.modality == 'T1w'
                    and rng.random() < template_probability)
    if use_template:
        canvas_image = template.tensor[0].numpy().astype(np.float64)
        canvas_image = canvas_image * float(rng.uniform(3, 8))
        # session 02 anatomy changes move the template too
        if session_index == 1:
            canvas_image = _relabel_template(template, session_labels, rng)
        return canvas_image
    random_contrast = (spec.modality not in images.QUANTITATIVE_MODALITIES
                       and rng.random() < random_contrast_probability)
    means, stds = images.tissue_intensities(rng, spec.modality, vocabulary, random_contrast)
    return images.render_contrast(rng, session_labels[session_index], means, stds
                                  ).tensor[0].numpy().astype(np.float64)


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
