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
