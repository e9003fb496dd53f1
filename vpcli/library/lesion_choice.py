"""Which of the predicted lesions a lesion description names.

A dense vision network predicts lesions by class: its ``infarct`` channel marks every
infarct it sees. A description says more (``largest hyperintense right parietal infarct``,
``left MCA-territory edema``), and its ground truth is only the lesions the description
fits (:func:`vpcli.tasks.roi.matching_lesions`). ``segment`` therefore splits the class
mask into connected lesions and keeps those whose descriptors, measured on the scan with
this library's own functions and regions, match the description's, by the same rules the
task world tags its lesions with (:mod:`vpcli.tasks.oracle`):

* side and lobe: the region of ``LOCATION_REGIONS`` (lobes, deep grey matter, cerebellum,
  brainstem, per side) holding the largest part of the lesion, the regions being the
  network's own masks of them;
* vascular territory: likewise among the left and right ACA, MCA and PCA territories;
* signal: ``signal_class(signal_ratio(scan, lesion))`` on the session's first scan;
* enhancement: ``enhancement_class(enhancement_ratio(post, pre, lesion))`` where that first
  scan is a pre-contrast T1w and the session has a post-contrast one;
* diffusion: ``diffusion_class`` of the DWI and ADC signal ratios where the first scan is
  the DWI and the session has an ADC map;
* size (``largest`` / ``smallest``): among the lesions that match the rest, the one of
  largest (smallest) volume; ``all ...`` keeps every match.

When no predicted lesion matches every descriptor, the ones that match the most are kept
and the mask's QC block says which descriptors no lesion matched (docs/qc.md), so a user
sees that the answer is the closest the network found, not the lesion asked for.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from vpcli.errors import VoxelPromptError

#: regions a lesion's lobe-level location is chosen among, in program order
LOCATION_REGIONS = tuple(f'{side} {key}' for side in ('left', 'right')
                         for key in ('frontal lobe', 'parietal lobe', 'temporal lobe',
                                     'occipital lobe', 'insular lobe', 'deep grey matter',
                                     'cerebellum')) + ('brainstem',)
#: region key -> the lesion's ``lobe`` descriptor value
REGION_LOBE = {'frontal lobe': 'frontal', 'parietal lobe': 'parietal', 'temporal lobe': 'temporal',
               'occipital lobe': 'occipital', 'insular lobe': 'insular',
               'deep grey matter': 'deep grey', 'cerebellum': 'cerebellar', 'brainstem': 'brainstem'}
#: regions a lesion's vascular territory is chosen among
TERRITORY_REGIONS = tuple(f'{side} {artery} territory' for side in ('left', 'right')
                          for artery in ('ACA', 'MCA', 'PCA'))
#: descriptors read from a lesion's scans (the rest come from its position)
SIGNAL_TAGS = ('signal', 'enhancement', 'diffusion')
#: parts of a lesion mask (probability > 0.5) joined through voxels of at least this
#: probability are one lesion
GROUPING_PROBABILITY = 0.25
#: descriptors read from a lesion's position
POSITION_TAGS = ('side', 'lobe', 'territory')
#: at most this many lesions (the largest that match the position) are measured for the
#: signal descriptors; each costs a shell around the lesion on the scan's whole grid
MEASURED_LESIONS = 8


def _regions(network, encoding, names: tuple[str, ...], session: int) -> list[np.ndarray]:
    """The network's masks of ``names`` on the session's first-scan grid (cached on the
    encoding, so a program's later lesion targets reuse them)."""
    cache = encoding.region_masks
    arrays = []
    for name in names:
        if name not in cache:
            result = network.segment(encoding, name)
            masks = result if isinstance(result, tuple) else (result,)
            cache[name] = [mask.volume.tensor[0].cpu().numpy().astype(bool) for mask in masks]
        arrays.append(cache[name][session])
    return arrays


def _largest_region(labels: np.ndarray, count: int, regions: list[np.ndarray],
                    names: tuple[str, ...]) -> list[str | None]:
    """Per component (1..count) the region holding its largest part (first on a tie)."""
    from scipy import ndimage
    index = np.arange(1, count + 1)
    overlaps = np.stack([np.asarray(ndimage.sum(region, labels, index)) for region in regions])
    best = overlaps.argmax(0)
    return [names[b] if overlaps[b, i] > 0 else None for i, b in enumerate(best)]


def position_tags(where: str | None, territory: str | None) -> dict[str, str]:
    """Side, lobe and territory descriptors of a lesion from the location region and the
    territory region holding its largest part (None: it touches none)."""
    tags: dict[str, str] = {}
    if where is not None:
        key = where.split(' ', 1)
        if key[0] in ('left', 'right'):
            tags['side'] = key[0]
            tags['lobe'] = REGION_LOBE[key[1]]
        else:
            tags['lobe'] = REGION_LOBE[where]
    if territory is not None:
        tags['territory'] = territory.split(' ')[1]
    return tags


def signal_tags(component, scans, wanted=SIGNAL_TAGS) -> dict[str, str]:
    """Signal, enhancement and diffusion descriptors (those of ``wanted``) of one lesion,
    a Mask on the grid of ``scans[0]``, as far as the session's ``scans`` allow: a
    signal class on the first scan, enhancement where it is a pre-contrast T1w and a
    post-contrast one is there, diffusion where it is the DWI and an ADC map is there."""
    from vpcli.library.characterization import (diffusion_class, enhancement_class,
                                                enhancement_ratio, signal_class, signal_ratio)
    first = scans[0]
    tags: dict[str, str] = {}
    try:
        if 'signal' in wanted:
            tags['signal'] = signal_class(signal_ratio(first, component))
        if 'enhancement' in wanted:
            post = next((s for s in scans if s.modality == 'T1w' and s.contrast), None)
            if post is not None and first.modality == 'T1w' and not first.contrast:
                tags['enhancement'] = enhancement_class(enhancement_ratio(post, first, component))
        if 'diffusion' in wanted:
            adc = next((s for s in scans if s.modality == 'ADC'), None)
            if adc is not None and first.modality == 'DWI':
                verdict = diffusion_class(signal_ratio(first, component),
                                          signal_ratio(adc, component))
                tags['diffusion'] = ('diffusion-restricting' if verdict == 'restricted diffusion'
                                     else 'non-restricting')
    except VoxelPromptError:
        pass  # no shell to compare with (the lesion fills the field of view's edge)
    return tags


def lesion_components(probability: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected lesions of a mask (probability > 0.5): parts joined through voxels of
    probability above :data:`GROUPING_PROBABILITY` are one lesion (a network's mask of one
    lesion may come in fragments the network still half believes in). Returns the label
    array (0 outside the mask, 1..count) and the count."""
    from scipy import ndimage
    binary = probability > 0.5
    labels, count = ndimage.label(probability > GROUPING_PROBABILITY,
                                  structure=np.ones((3, 3, 3), bool))
    labels[~binary] = 0
    present = np.unique(labels[labels > 0])
    relabel = np.zeros(count + 1, dtype=labels.dtype)
    relabel[present] = np.arange(1, len(present) + 1)
    return relabel[labels], len(present)


def lesion_chooser(network, encoding, target: str) -> Callable | None:
    """For a lesion description with descriptors, the function ``segment`` applies to each
    session's probability map: ``choose(session, probability) -> (keep, unmatched)`` with
    ``keep`` a boolean array of the lesions the description names (None: keep all) and
    ``unmatched`` the descriptors no predicted lesion matched. None for any other target."""
    from vpcli.tasks.ontology import LesionQuery, parse_target  # the ontology is a leaf module
    try:
        query = parse_target(target)
    except KeyError:
        return None
    if not isinstance(query, LesionQuery) or not query.tags:
        return None
    wanted = query.tag_dict
    size = wanted.pop('size', None)

    def choose(session: int, probability) -> tuple[np.ndarray | None, list[str]]:
        import torch

        from vpcli.volumes import Mask
        labels, count = lesion_components(probability.tensor[0].detach().float().cpu().numpy())
        if count == 0:
            return None, []
        voxels = np.bincount(labels.ravel(), minlength=count + 1)[1:]
        measured: list[dict[str, str]] = [{} for _ in range(count)]
        if any(kind in wanted for kind in ('side', 'lobe')):
            where = _largest_region(labels, count, _regions(network, encoding, LOCATION_REGIONS,
                                                            session), LOCATION_REGIONS)
        else:
            where = [None] * count
        if 'territory' in wanted:
            territory = _largest_region(labels, count, _regions(network, encoding,
                                                                TERRITORY_REGIONS, session),
                                        TERRITORY_REGIONS)
        else:
            territory = [None] * count
        for i in range(count):
            measured[i].update(position_tags(where[i], territory[i]))

        def matches(i: int, kinds) -> int:
            return sum(measured[i].get(kind) == wanted[kind] for kind in kinds)

        position = [kind for kind in POSITION_TAGS if kind in wanted]
        signal = [kind for kind in wanted if kind not in POSITION_TAGS]
        if signal:
            best_position = max(matches(i, position) for i in range(count))
            candidates = sorted((i for i in range(count) if matches(i, position) == best_position),
                                key=lambda i: -voxels[i])[:MEASURED_LESIONS]
            group = encoding.sessions[session]
            scans = [encoding.scans[s] for s in group]
            first = scans[0]
            for i in candidates:
                component = Mask(first.volume.new(torch.from_numpy(labels[None] == i + 1),
                                                  keep_labels=False), first.sources, target)
                measured[i].update(signal_tags(component, scans, wanted))
        score = [matches(i, wanted) for i in range(count)]
        best = max(score)
        chosen = [i for i in range(count) if score[i] == best]
        if size and not query.every:
            pick = max if size == 'largest' else min
            chosen = [pick(chosen, key=lambda i: voxels[i])]
        unmatched = [wanted[kind] for kind in wanted
                     if not all(measured[i].get(kind) == wanted[kind] for i in chosen)]
        keep = np.isin(labels, np.asarray(chosen) + 1)
        return keep, unmatched

    return choose
