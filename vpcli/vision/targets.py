"""What a dense vision network's output channels mean, and how a target is made of them.

A dense network (``VisionConfig.label_names`` not empty) predicts, at every voxel:

* one softmax over the **finest anatomical partition**: background plus every label of the
  synthesis vocabulary (FreeSurfer aseg structures and Desikan-Killiany parcels), and
* one sigmoid channel per **lesion class** (the ontology's leaf classes).

Every target the task world can name is a fixed function of those channels: an anatomical
target is the sum of the softmax probabilities of its labels (a lobe or vascular territory
also takes the cerebral white matter whose nearest predicted cortical parcel is one of its
parcels, as its ground truth does, :mod:`vpcli.tasks.oracle`); a lesion class is the
voxel-wise maximum of the channels of the leaf classes it covers. The names come from the
network's own config, so no colour table is needed at run time. This module is torch-free
except where a function says otherwise.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

from vpcli.errors import ProgramError
from vpcli.tasks.ontology import AnatomyTarget, LesionQuery, load_ontology, parse_target


@dataclasses.dataclass(frozen=True)
class TargetParts:
    """The output channels that make up one target.

    Attributes:
        name: Canonical target text (``left hippocampus``, ``glioma``).
        labels: Indices into the anatomical softmax (0 is background, never a part).
        lesions: Indices into the lesion channels.
        white_matter_sides: For lobes and territories, the hemispheres (``Left``/``Right``)
            whose cerebral white matter is added where its nearest cortical parcel is one
            of ``labels``; empty otherwise.
    """
    name: str
    labels: tuple[int, ...]
    lesions: tuple[int, ...]
    white_matter_sides: tuple[str, ...] = ()


def anatomy_parts(target: AnatomyTarget, label_names: Sequence[str]) -> TargetParts:
    """Softmax indices (1-based: 0 is background) of an anatomical target's labels."""
    index = {name: i + 1 for i, name in enumerate(label_names)}
    labels = tuple(sorted(index[name] for name in target.labels if name in index))
    sides: tuple[str, ...] = ()
    if target.white_matter:
        sides = ('Left', 'Right') if target.side in ('bilateral', 'midline') else \
            (target.side.title(),)
    return TargetParts(target.name, labels, (), sides)


def lesion_parts(class_key: str, lesion_classes: Sequence[str]) -> TargetParts:
    """Lesion channel indices of a lesion class (every leaf class it covers)."""
    ontology = load_ontology()
    lesions = tuple(i for i, leaf in enumerate(lesion_classes) if ontology.covers(class_key, leaf))
    return TargetParts(ontology.lesion_classes[class_key].name, (), lesions)


@functools.lru_cache(maxsize=4096)
def _parts_cached(key: str, label_names: tuple[str, ...],
                  lesion_classes: tuple[str, ...]) -> TargetParts:
    ontology = load_ontology()
    if key in ontology.targets:
        return anatomy_parts(ontology.targets[key], label_names)
    if key in ontology.lesion_classes:
        return lesion_parts(key, lesion_classes)
    raise KeyError(key)


def parts_of(key: str, label_names: Sequence[str], lesion_classes: Sequence[str]) -> TargetParts:
    """Parts of a selectable target key (an anatomical target name or a lesion class key)."""
    return _parts_cached(key, tuple(label_names), tuple(lesion_classes))


def target_key(text: str) -> str:
    """The key a target text names: the anatomical target, or the lesion class of
    a lesion description (``largest left frontal glioma`` -> ``glioma``).

    Raises:
        ProgramError: the text names nothing in the task world's ontology.
    """
    try:
        meaning = parse_target(text)
    except KeyError:
        folded = ' '.join(text.lower().split())
        by_lower = {name.lower(): name for name in load_ontology().targets}
        if folded in by_lower:  # "Left Hippocampus" as a person may write it
            return by_lower[folded]
        raise ProgramError(f'segment: unknown target "{text}"; name one of the targets '
                           f'`voxelprompt info --json` lists (e.g. "left hippocampus", '
                           f'"whole brain", "glioma")') from None
    if isinstance(meaning, AnatomyTarget):
        return meaning.name
    assert isinstance(meaning, LesionQuery)
    return meaning.class_key


#: labels the volume calibration leaves alone: the tissue classes and the cortical parcels,
#: whose boundaries with each other decide the white and grey matter answers (fitted with
#: the rest, the cerebellar white matter shrank and the example's white matter Dice fell
#: from 0.766 to 0.761: docs/vision.md, "Volume calibration")
UNCALIBRATED = ('Cerebral-White-Matter', 'Cerebellum-White-Matter', 'Cerebellum-Cortex')


def calibrated_labels(label_names: Sequence[str]) -> list[bool]:
    """Per anatomical channel (background first), whether the volume calibration fits it:
    every label but the cortical parcels and :data:`UNCALIBRATED`."""
    return [False] + [not (name.startswith('ctx-') or name.split('-', 1)[-1] in UNCALIBRATED)
                      for name in label_names]


def refinement_held_labels(label_names: Sequence[str]) -> list[bool]:
    """Per anatomical channel (background first), whether intensity refinement leaves it at
    its (calibrated) prior: the labels the volume calibration fits, except the CSF spaces
    (ventricles and CSF), whose contrast with tissue is the strongest a scan shows.
    Refined too, the deep grey masks of the real templates grew from a median 1.24 to
    1.39 times Neuromorphometrics' volumes (docs/vision.md, "Intensity refinement")."""
    held = calibrated_labels(label_names)
    for index, name in enumerate(label_names):
        if 'Vent' in name or name == 'CSF':
            held[index + 1] = False
    return held
