"""ROI descriptions of variable specificity (VoxelPrompt §3.2).

An anatomical ROI is phrased with one of its terms and a side form (``left hippocampus``,
``hippocampus on the left``, ``both hippocampi``). A lesion ROI is a class term (the
lesion's class or, when no other lesion in the case shares it, any ancestor: glioma ->
neoplasm -> mass -> lesion) with descriptor tags as prefixes or suffixes (``left frontal
mass``, ``mass in the frontal lobe``). With one lesion, tags are dropped at random for
coarse phrasing; with several, tags are added until the description picks exactly one
lesion, falling back to its size rank (``largest``).

Each description comes with its canonical text, which the target program passes to
``segment`` and :func:`vpcli.tasks.ontology.parse_target` reads back.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import tomllib

import numpy as np

from vpcli.tasks.ontology import (DATA_DIR, DESCRIPTOR_ORDER, AnatomyTarget, LesionQuery,
                                  lesion_canonical, load_ontology)
from vpcli.tasks.world import LesionInfo

#: probability that a single lesion's description keeps each of its tags
KEEP_TAG_PROBABILITY = 0.35
#: probability that a tag goes after the class term rather than before it
SUFFIX_PROBABILITY = 0.35


@dataclasses.dataclass(frozen=True)
class RoiPhrase:
    """A sampled ROI description.

    Attributes:
        text: As the prompt writes it, with an article where one fits (``the hippocampus on
            the left``).
        bare: A prefix-only form without article, for noun-adjunct use (``left hippocampus
            volume``).
        canonical: The target text for ``segment`` (``left hippocampus``).
    """
    text: str
    bare: str
    canonical: str


@functools.lru_cache(maxsize=1)
def phrasing() -> dict:
    """The phrasing data file (side forms, modality words, shared slots)."""
    with open(DATA_DIR / 'phrasing.toml', 'rb') as file:
        return tomllib.load(file)


def _choice(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _with_article(rng: np.random.Generator, bare: str) -> str:
    # "the both hippocampi" / "the all lesions" do not read; everything else may take "the"
    if bare.split(' ')[0] in ('both', 'all', 'left', 'right', 'bilateral') and ' and ' in bare:
        return 'the ' + bare if rng.random() < 0.5 else bare
    if bare.split(' ')[0] in ('both', 'all'):
        return bare
    return 'the ' + bare if rng.random() < 0.8 else bare


#: head nouns that end in s and are singular
_SINGULAR_S = {'pons', 'accumbens', 'corpus', 'plexus', 'vermis', 'thalamus', 'hippocampus', 'cuneus',
               'precuneus', 'isthmus', 'nucleus', 'fornix', 'sulcus', 'gyrus', 'uncus', 'mass'}
#: plural head nouns that do not end in s
_PLURAL = {'ganglia', 'gyri', 'nuclei', 'sulci', 'hippocampi', 'thalami', 'amygdalae', 'insulae', 'fornices',
           'plexuses', 'both'}


def is_plural(text: str) -> bool:
    """Whether an ROI phrase as the prompt writes it names several things ("the lateral
    ventricles", "left and right caudate", "the lesions in the left frontal lobe"), for
    ``{roi_is}`` ("how big are the lateral ventricles?")."""
    head = re.split(r' \(| on | in | of | at | within |,', text.strip(), maxsplit=1)[0].lower()
    if ' and ' in head or head.startswith('both '):
        return True
    words = head.split()
    if not words:
        return False
    last = words[-1]
    if last in _PLURAL:
        return True
    if last in _SINGULAR_S or last.endswith(('us', 'is', 'ss')):
        return False
    return last.endswith('s')


def anatomy_phrase(rng: np.random.Generator, target: AnatomyTarget) -> RoiPhrase:
    """Phrase an anatomical target with a random term and side form."""
    forms = phrasing()['anatomy']
    term = _choice(rng, target.terms)
    if target.side in ('left', 'right'):
        patterns = forms['lateral_short'] if 'hemisphere' in term else forms['lateral']
        bare = _choice(rng, patterns).format(t=term, side=target.side)
    elif target.side == 'bilateral':
        patterns = list(forms['bilateral'])
        if target.plural:
            patterns += forms['bilateral_plural']
            if 'hemisphere' in term:  # "the hemisphere" would read as one side
                patterns = list(forms['bilateral_plural'])
        bare = _choice(rng, patterns).format(t=term, p=target.plural or term)
    else:
        bare = term
    # the noun-adjunct form only takes prefix side forms ("left hippocampus volume")
    if target.side in ('left', 'right'):
        adjunct = _choice(rng, forms['lateral_prefix']).format(t=term, side=target.side)
    elif target.side == 'bilateral':
        adjunct = _choice(rng, forms['bilateral_prefix']).format(t=term)
        if 'hemisphere' in term and target.plural:
            adjunct = _choice(rng, ('both ', 'bilateral ', 'left and right ')) + target.plural
    else:
        adjunct = term
    return RoiPhrase(_with_article(rng, bare), adjunct, target.name)


# -----------------------------------------------------------------------------
# lesions
# -----------------------------------------------------------------------------

def matching_lesions(query: LesionQuery, lesions: tuple[LesionInfo, ...] | list[LesionInfo]
                     ) -> list[LesionInfo]:
    """The lesions a query describes.

    A lesion matches when the query's class is its class or an ancestor and every tag other
    than size equals the lesion's; a size tag then keeps the largest (or smallest) of those
    by first-session volume. ``all ...`` queries keep every match.
    """
    ontology = load_ontology()
    tags = query.tag_dict
    size = tags.pop('size', None)
    found = [lesion for lesion in lesions
             if ontology.covers(query.class_key, lesion.class_key)
             and all(lesion.tags.get(kind) == value for kind, value in tags.items())]
    if size and found:
        pick = max if size == 'largest' else min
        found = [pick(found, key=lambda lesion: lesion.volume_ml)]
    return found


def _unique(class_key: str, tags: dict[str, str], target: LesionInfo,
            lesions: tuple[LesionInfo, ...]) -> bool:
    found = matching_lesions(LesionQuery(class_key, tuple(sorted(tags.items()))), lesions)
    return len(found) == 1 and found[0].id == target.id


def lesion_description(rng: np.random.Generator, target: LesionInfo,
                       lesions: tuple[LesionInfo, ...], exclude: tuple[str, ...] = ()
                       ) -> tuple[str, dict[str, str]] | None:
    """Choose a class level and tags that single out ``target`` among ``lesions``.

    Args:
        rng: Random generator.
        target: The lesion to describe.
        lesions: All lesions of the case (including ``target``).
        exclude: Descriptor kinds the description must not use (the property a
            characterization task asks about).

    Returns:
        ``(class_key, tags)``, or None when no description singles the lesion out.
    """
    ontology = load_ontology()
    available = {kind: value for kind, value in target.tags.items() if kind not in exclude}
    ancestors = ontology.ancestors(target.class_key)
    # parent terms only when no other lesion falls under them (paper: "only abnormal finding")
    levels = [key for key in ancestors
              if all(not ontology.covers(key, other.class_key) for other in lesions
                     if other.id != target.id)]
    if not levels:
        levels = [target.class_key]
    class_key = _choice(rng, levels)
    kinds = [k for k in DESCRIPTOR_ORDER if k in available]
    order = [kinds[i] for i in rng.permutation(len(kinds))]
    chosen = {k: available[k] for k in order if rng.random() < KEEP_TAG_PROBABILITY}
    # add tags in random order until the description is unambiguous
    for kind in order:
        if _unique(class_key, chosen, target, lesions):
            break
        chosen[kind] = available[kind]
    if not _unique(class_key, chosen, target, lesions) and 'size' not in exclude:
        others = [lesion for lesion in lesions if lesion.id != target.id]
        bigger = [o for o in others if o.volume_ml >= target.volume_ml]
        smaller = [o for o in others if o.volume_ml <= target.volume_ml]
        for rank, beaten in (('largest', bigger), ('smallest', smaller)):
            if not beaten:
                candidate = dict(chosen, size=rank)
                if _unique(class_key, candidate, target, lesions):
                    chosen = candidate
                    break
    if not _unique(class_key, chosen, target, lesions):
        return None
    return class_key, chosen


def lesion_phrase(rng: np.random.Generator, class_key: str, tags: dict[str, str],
                  every: bool = False) -> RoiPhrase:
    """Phrase a lesion description: a class term with its tags as prefixes/suffixes."""
    ontology = load_ontology()
    cls = ontology.lesion_classes[class_key]
    term = cls.plural if every else _choice(rng, cls.terms)
    prefixes, suffixes = [], []
    for kind in DESCRIPTOR_ORDER:
        if kind not in tags:
            continue
        descriptor = ontology.descriptors[kind]
        value = tags[kind]
        suffix_options = descriptor.suffix[value]
        if suffix_options and rng.random() < SUFFIX_PROBABILITY:
            suffixes.append(_choice(rng, suffix_options))
        else:
            prefixes.append(_choice(rng, descriptor.prefix[value]))
    order = rng.permutation(len(suffixes))
    words = prefixes + [term] + [suffixes[i] for i in order]
    full = ' '.join(words)
    # noun-adjunct form: every tag as a prefix ("left frontal glioma volume")
    bare = ' '.join([_choice(rng, ontology.descriptors[k].prefix[tags[k]])
                     for k in DESCRIPTOR_ORDER if k in tags] + [term])
    if every:
        text = _choice(rng, ('all ', 'all of the ', 'the ', '')) + full
    else:
        text = 'the ' + full if rng.random() < 0.85 else full
    return RoiPhrase(text, bare, lesion_canonical(class_key, tags, every))


def modality_words(rng: np.random.Generator, modality: str) -> str:
    """A word for a modality (``T1-weighted``, ``FLAIR``...)."""
    return _choice(rng, phrasing()['modality'][modality])


def shared_slots() -> dict:
    """Slots every category's templates may use."""
    return phrasing()['slots']
