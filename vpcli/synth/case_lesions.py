"""Lesion phases of :func:`vpcli.synth.cases.sample_case`.

Lesion plans and their canvas masks are drawn once on session 01
(:func:`_draw_lesions`), regrown for session 02 (:func:`_regrow_lesions`), painted
into per-session canvas instance and component maps (:func:`_canvas_lesion_maps`),
and described as :class:`~vpcli.synth.lesions.SynthLesion` records
(:func:`_describe_lesions`). Every function draws from the case's generator in the
order :func:`~vpcli.synth.cases.sample_case` calls it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from vpcli.synth.lesions import SynthLesion
from vpcli.volumes import POST_CONTRAST

if TYPE_CHECKING:
    import voxel as vx

    from vpcli.synth.case_scans import ScanSpec
    from vpcli.synth.lesions import LesionPlan
    from vpcli.synth.vocabulary import Vocabulary


def _lesion_plans_and_masks(rng: np.random.Generator, lesion_classes: list[str],
                            label_arrays: list[np.ndarray], vocabulary: 'Vocabulary',
                            spacing_mm: float
                            ) -> tuple[list['LesionPlan'], list[dict[int, np.ndarray]]]:
    """Lesion plans drawn once on session 01, and their masks regrown for session 02.

    Args:
        rng: The case's generator.
        lesion_classes: The lesion classes to draw, in order (the ``lesions``
            argument of :func:`~vpcli.synth.cases.sample_case` resolved).
        label_arrays: Per session, the canvas label array.
        vocabulary: The label vocabulary.
        spacing_mm: Canvas spacing.

    Returns:
        The plans (cores first, each oedema after its core) and, per session, the
        canvas mask of each plan's instance.
    """
    plans, masks0 = _draw_lesions(rng, lesion_classes, label_arrays[0], vocabulary, spacing_mm)
    session_masks = [masks0]
    if len(label_arrays) > 1:
        session_masks.append(_regrow_lesions(rng, plans, label_arrays[1], vocabulary))
    return plans, session_masks


def _draw_lesions(rng: np.random.Generator, lesion_classes: list[str], labels: np.ndarray,
                  vocabulary: 'Vocabulary', spacing_mm: float
                  ) -> tuple[list['LesionPlan'], dict[int, np.ndarray]]:
    """Session 01 lesions: plans and their non-overlapping canvas masks.

    Args:
        rng: The case's generator.
        lesion_classes: The lesion classes to draw, in order (the ``lesions``
            argument of :func:`~vpcli.synth.cases.sample_case` resolved).
        labels: Session 01 canvas label array.
        vocabulary: The label vocabulary.
        spacing_mm: Canvas spacing.

    Returns:
        The plans kept and the mask of each plan's instance.
    """
    from scipy import ndimage

    from vpcli.synth import lesions as lesion_lib
    brain = labels > 0
    depth = ndimage.distance_transform_edt(brain) * spacing_mm
    ventricles = np.isin(labels, [vocabulary.id('Left-Lateral-Ventricle'),
                                  vocabulary.id('Right-Lateral-Ventricle')])
    ventricle_distance = ndimage.distance_transform_edt(~ventricles) * spacing_mm
    occupied = np.zeros(brain.shape, dtype=bool)
    plans: list[lesion_lib.LesionPlan] = []
    masks: dict[int, np.ndarray] = {}
    for lesion_class in lesion_classes:
        instance = len(plans) + 1
        plan = lesion_lib.draw_lesion_plan(rng, lesion_class, instance, labels, spacing_mm,
                                           vocabulary, depth, ventricle_distance, occupied)
        if plan is None:
            continue
        mask = lesion_lib.shape_from_plan(plan, labels, vocabulary, occupied=occupied)
        if mask.sum() < 4:
            continue
        plans.append(plan)
        masks[plan.instance] = mask
        occupied |= ndimage.binary_dilation(mask, iterations=1)
        oedema = lesion_lib.lesion_classes()[lesion_class]['oedema']
        if lesion_class != 'oedema' and rng.random() < oedema[0]:
            child = lesion_lib.draw_lesion_plan(rng, 'oedema', len(plans) + 1, labels,
                                                spacing_mm, vocabulary, depth, ventricle_distance,
                                                occupied & ~ndimage.binary_dilation(mask, iterations=1),
                                                parent=plan, parent_mask=mask)
            if child is not None:
                child.parent = plan.instance
                child_mask = lesion_lib.shape_from_plan(child, labels, vocabulary,
                                                        occupied=occupied) & ~mask
                child_mask = _grown_shell(child_mask, mask)
                if child_mask.sum() >= 4:
                    plans.append(child)
                    masks[child.instance] = child_mask
                    occupied |= child_mask
    return plans, masks


def _regrow_lesions(rng: np.random.Generator, plans: list['LesionPlan'], labels: np.ndarray,
                    vocabulary: 'Vocabulary') -> dict[int, np.ndarray]:
    """Session 02 masks: each core grows, shrinks or stays; its oedema follows.

    Sets ``plan.change`` on every plan.

    Args:
        rng: The case's generator.
        plans: The session 01 plans.
        labels: Session 02 canvas label array.
        vocabulary: The label vocabulary.

    Returns:
        The session 02 mask of each plan's instance.
    """
    from scipy import ndimage

    from vpcli.synth import lesions as lesion_lib
    masks: dict[int, np.ndarray] = {}
    taken = np.zeros(labels.shape, dtype=bool)
    for plan in plans:
        if plan.parent is not None:
            continue
        plan.change = str(rng.choice(lesion_lib.lesion_classes()[plan.lesion_class]['change']))
        shift = {'growth': -float(rng.uniform(0.2, 0.5)),
                 'shrinkage': float(rng.uniform(0.15, 0.35)), 'stable': 0.0}[plan.change]
        mask = lesion_lib.shape_from_plan(plan, labels, vocabulary, shift, occupied=taken)
        if mask.sum() < 2:
            mask = lesion_lib.shape_from_plan(plan, labels, vocabulary, 0.0)
        masks[plan.instance] = mask
        taken |= ndimage.binary_dilation(mask, iterations=1)
    for plan in plans:
        if plan.parent is None:
            continue
        parent_mask = masks[plan.parent]
        plan.change = next(p.change for p in plans if p.instance == plan.parent)
        shift = {'growth': -0.2, 'shrinkage': 0.2, 'stable': 0.0}[plan.change]
        mask = lesion_lib.shape_from_plan(plan, labels, vocabulary, shift,
                                          occupied=taken) & ~parent_mask
        masks[plan.instance] = _grown_shell(mask, parent_mask)
        taken |= masks[plan.instance]
    return masks


def _canvas_lesion_maps(plans: list['LesionPlan'], session_masks: list[dict[int, np.ndarray]],
                        shape: tuple[int, ...]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per session, the canvas lesion instance map (int32) and component map (uint8).

    Args:
        plans: The lesion plans (later plans overwrite earlier ones where they overlap).
        session_masks: Per session, the mask of each plan's instance.
        shape: Canvas shape.

    Returns:
        The instance maps and the component-code maps, one per session.
    """
    from vpcli.synth import lesions as lesion_lib
    canvas_lesions, canvas_components = [], []
    for masks in session_masks:
        instance_map = np.zeros(shape, dtype=np.int32)
        component_map = np.zeros(shape, dtype=np.uint8)
        for plan in plans:
            mask = masks.get(plan.instance)
            if mask is None:
                continue
            instance_map[mask] = plan.instance
            codes = lesion_lib.components_of(plan, mask)
            component_map[mask] = codes[mask]
        canvas_lesions.append(instance_map)
        canvas_components.append(component_map)
    return canvas_lesions, canvas_components


def _describe_lesions(sessions: list[str], specs: list[ScanSpec], label_arrays: list[np.ndarray],
                      plans: list['LesionPlan'], session_masks: list[dict[int, np.ndarray]],
                      canvas_components: list[np.ndarray],
                      measured: dict[tuple[str, int], dict[str, float | None]],
                      geometry: 'vx.AcquisitionGeometry', vocabulary: 'Vocabulary',
                      spacing: float) -> list[SynthLesion]:
    """One :class:`SynthLesion` per lesion present in each session, size-ranked per session.

    Args:
        sessions: Session labels.
        specs: The scans of each session (enhancement and restricted diffusion are
            reported only when a contrast or a DWI/ADC pair was acquired).
        label_arrays: Per session, the canvas label array.
        plans, session_masks: The lesion plans and, per session, their canvas masks.
        canvas_components: Per session, the canvas component-code map.
        measured: Measured signal ratios per (session, instance) per scan name.
        geometry: The canvas geometry (for lesion centres in world mm).
        vocabulary: The label vocabulary.
        spacing: Canvas spacing (mm).

    Returns:
        The lesions, session 01 first, in plan order within a session.
    """
    import torch

    from vpcli.synth import lesions as lesion_lib
    has_contrast_pair = any(s.contrast and s.grid_group is not None for s in specs)
    has_diffusion_pair = any(s.modality == 'DWI' and s.grid_group is not None for s in specs) \
        and any(s.modality == 'ADC' for s in specs)
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
            center_mm = geometry.map(torch.tensor(voxel_center, dtype=geometry.tensor.dtype))
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
    return infos


def _grown_shell(oedema: np.ndarray, core: np.ndarray) -> np.ndarray:
    """Oedema touching its core: keep the oedema components adjacent to the core."""
    from scipy import ndimage
    if not oedema.any():
        return oedema
    components, count = ndimage.label(oedema)
    touching = np.unique(components[ndimage.binary_dilation(core, iterations=2) & oedema])
    return np.isin(components, touching[touching > 0])
