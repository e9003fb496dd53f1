"""The task world's ontology: anatomical targets and lesion classes, read from data files.

Anatomical targets (``data/anatomy.toml``) are sets of FreeSurfer colour-table label names;
bilateral entries expand to ``left X``, ``right X`` and ``bilateral X``. Lesion classes
(``data/lesions.toml``) form a tree (glioma -> neoplasm -> mass -> lesion) and lesions are
told apart by descriptor tags (side, lobe, territory, signal, enhancement, diffusion, size
rank). The canonical name of a target is the text target programs pass to ``segment``;
:func:`parse_target` maps such text back to what it means (the oracle vision uses it).
"""

from __future__ import annotations

import dataclasses
import functools
import re
import tomllib
from pathlib import Path

DATA_DIR = Path(__file__).parent / 'data'

SIDES = ('left', 'right')
_SIDE_WORDS = {'left': ('Left', 'lh'), 'right': ('Right', 'rh')}

#: descriptor kinds in the fixed order a canonical lesion description writes them
DESCRIPTOR_ORDER = ('size', 'signal', 'enhancement', 'diffusion', 'side', 'lobe', 'territory')


@dataclasses.dataclass(frozen=True)
class AnatomyTarget:
    """One anatomical target.

    Attributes:
        name: Canonical name, as target programs write it (``left hippocampus``).
        key: The structure key shared by its left/right/bilateral forms (``hippocampus``).
        side: ``left``, ``right``, ``bilateral`` or ``midline``.
        labels: FreeSurfer colour-table label names it is the union of.
        terms: Interchangeable words for the structure without side (first canonical).
        plural: Plural term for bilateral phrasing, or None.
        kind: Sampling group (subcortical, ventricle, tissue, cortex, lobe, group, territory).
        white_matter: Also holds the cerebral white matter whose nearest cortical label is one
            of ``labels`` (lobes and vascular territories; see docs/tasks.md).
    """
    name: str
    key: str
    side: str
    labels: frozenset[str]
    terms: tuple[str, ...]
    plural: str | None
    kind: str
    white_matter: bool = False

    @property
    def cortical_labels(self) -> frozenset[str]:
        """The cortical parcel labels (``ctx-*``) among ``labels``."""
        return frozenset(label for label in self.labels if label.startswith('ctx-'))

    @property
    def counterpart(self) -> str | None:
        """Canonical name of the same structure on the other side (None unless lateral)."""
        if self.side not in SIDES:
            return None
        other = 'right' if self.side == 'left' else 'left'
        return f'{other} {self.key}'


@dataclasses.dataclass(frozen=True)
class LesionClass:
    """A node of the lesion class tree.

    Attributes:
        key: Identifier (``low_grade_glioma``).
        parent: Parent key, or None at the root.
        terms: Interchangeable terms (first canonical).
        plural: Plural of the canonical term.
        synth: The :mod:`vpcli.synth` lesion class this class names (leaf classes only).
    """
    key: str
    parent: str | None
    terms: tuple[str, ...]
    plural: str
    synth: str | None

    @property
    def leaf(self) -> bool:
        """Synthesised lesions have leaf classes."""
        return self.synth is not None

    @property
    def name(self) -> str:
        """Canonical term."""
        return self.terms[0]


@dataclasses.dataclass(frozen=True)
class Descriptor:
    """A lesion metadata tag kind and how prompts phrase it.

    Attributes:
        kind: ``side``, ``lobe``, ``territory``, ``signal``, ``enhancement``, ``diffusion``, ``size``.
        values: Canonical tag values.
        prefix: Per value, prefix phrasings (``left frontal``-style adjectives).
        suffix: Per value, suffix phrasings (``in the frontal lobe``).
    """
    kind: str
    values: tuple[str, ...]
    prefix: dict[str, tuple[str, ...]]
    suffix: dict[str, tuple[str, ...]]


@dataclasses.dataclass(frozen=True)
class Ontology:
    """All anatomical targets, lesion classes and descriptors."""
    targets: dict[str, AnatomyTarget]
    lesion_classes: dict[str, LesionClass]
    descriptors: dict[str, Descriptor]

    def ancestors(self, key: str) -> list[str]:
        """The class and its ancestors, most specific first (``glioma`` ... ``lesion``)."""
        chain = []
        while key:
            chain.append(key)
            key = self.lesion_classes[key].parent
        return chain

    def covers(self, general: str, specific: str) -> bool:
        """True when lesion class ``general`` is ``specific`` or one of its ancestors."""
        return general in self.ancestors(specific)

    def leaf_classes(self) -> list[str]:
        """Keys of the classes lesions are synthesised as."""
        return [k for k, c in self.lesion_classes.items() if c.leaf]

    def class_of_synth(self, synth_class: str) -> str:
        """The ontology class of a :mod:`vpcli.synth` lesion class (``haemorrhage`` -> ``hemorrhage``)."""
        for key, cls in self.lesion_classes.items():
            if cls.synth == synth_class:
                return key
        raise KeyError(f'lesions.toml: no class has synth = "{synth_class}"')

    def class_by_term(self) -> dict[str, str]:
        """Every lesion term (lower case, singular and plural) -> class key."""
        mapping = {}
        for key, cls in self.lesion_classes.items():
            for term in cls.terms + (cls.plural,):
                mapping[term.lower()] = key
        return mapping

    def targets_of_kind(self, *kinds: str) -> list[AnatomyTarget]:
        """Targets whose kind is one of ``kinds``, in file order."""
        return [t for t in self.targets.values() if t.kind in kinds]


def _read(name: str) -> dict:
    with open(DATA_DIR / name, 'rb') as file:
        return tomllib.load(file)


def _expand_bilateral(entries: list[dict], midline: list[dict]) -> dict[str, AnatomyTarget]:
    by_key = {e['key']: e for e in entries}
    midline_by_key = {e['key']: e for e in midline}

    @functools.lru_cache(maxsize=None)
    def side_labels(key: str, side: str) -> frozenset[str]:
        entry = by_key[key]
        upper, hemi = _SIDE_WORDS[side]
        labels = {label.replace('{Side}', upper).replace('{hemi}', hemi)
                  for label in entry.get('labels', [])}
        for member in entry.get('members', []):
            if member not in by_key:
                raise ValueError(f'anatomy.toml: {key!r} lists unknown bilateral member {member!r}')
            labels |= side_labels(member, side)
        return frozenset(labels)

    @functools.lru_cache(maxsize=None)
    def midline_labels(key: str) -> frozenset[str]:
        entry = midline_by_key[key]
        labels = set(entry.get('labels', []))
        for member in entry.get('members', []):
            if member in by_key:
                labels |= side_labels(member, 'left') | side_labels(member, 'right')
            elif member in midline_by_key:
                labels |= midline_labels(member)
            else:
                raise ValueError(f'anatomy.toml: {key!r} lists unknown member {member!r}')
        return frozenset(labels)

    targets: dict[str, AnatomyTarget] = {}
    for entry in entries:
        terms = tuple(entry['names'])
        for side in ('left', 'right', 'bilateral'):
            labels = (side_labels(entry['key'], 'left') | side_labels(entry['key'], 'right')
                      if side == 'bilateral' else side_labels(entry['key'], side))
            name = f'{side} {entry["key"]}'
            targets[name] = AnatomyTarget(name, entry['key'], side, labels, terms,
                                          entry.get('plural'), entry['kind'],
                                          bool(entry.get('white_matter', False)))
    for entry in midline:
        targets[entry['key']] = AnatomyTarget(entry['key'], entry['key'], 'midline',
                                              midline_labels(entry['key']), tuple(entry['names']),
                                              entry.get('plural'), entry['kind'])
    return targets


def _descriptors(raw: dict) -> dict[str, Descriptor]:
    out = {}
    for kind, spec in raw.items():
        prefix, suffix = {}, {}
        special = spec.get('phrase', {})
        for value in spec['values']:
            if value in special:
                prefix[value] = tuple(special[value]['prefix'])
                suffix[value] = tuple(special[value]['suffix'])
            else:
                prefix[value] = tuple(p.replace('{v}', value) for p in spec['prefix'])
                suffix[value] = tuple(s.replace('{v}', value) for s in spec['suffix'])
        out[kind] = Descriptor(kind, tuple(spec['values']), prefix, suffix)
    return out


@functools.lru_cache(maxsize=1)
def load_ontology() -> Ontology:
    """Read the ontology data files (cached; the result is immutable by convention)."""
    anatomy = _read('anatomy.toml')
    targets = _expand_bilateral(anatomy['bilateral'], anatomy['midline'])
    lesions = _read('lesions.toml')
    classes = {}
    for key, spec in lesions['class'].items():
        classes[key] = LesionClass(key, spec['parent'] or None, tuple(spec['names']),
                                   spec['plural'], spec.get('synth'))
    for cls in classes.values():
        if cls.parent is not None and cls.parent not in classes:
            raise ValueError(f'lesions.toml: class {cls.key!r} has unknown parent {cls.parent!r}')
    return Ontology(targets, classes, _descriptors(lesions['descriptor']))


# -----------------------------------------------------------------------------
# canonical lesion descriptions and their parsing
# -----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class LesionQuery:
    """What a lesion target text asks for: a class (any level) and descriptor tags.

    Attributes:
        class_key: The class term's key (``neoplasm`` also matches gliomas).
        tags: Descriptor kind -> canonical value (``{'side': 'left', 'lobe': 'frontal'}``).
        every: True for ``all <plural>`` (the union of every matching lesion).
    """
    class_key: str
    tags: tuple[tuple[str, str], ...] = ()
    every: bool = False

    @property
    def tag_dict(self) -> dict[str, str]:
        return dict(self.tags)


def lesion_canonical(class_key: str, tags: dict[str, str], every: bool = False) -> str:
    """The canonical text of a lesion target (``largest left frontal glioma``).

    Tags are written in :data:`DESCRIPTOR_ORDER`; a territory is written ``MCA-territory``.
    """
    ontology = load_ontology()
    words = []
    for kind in DESCRIPTOR_ORDER:
        if kind in tags:
            value = tags[kind]
            words.append(f'{value}-territory' if kind == 'territory' else value)
    cls = ontology.lesion_classes[class_key]
    if every:
        return ' '.join(['all'] + words + [cls.plural])
    return ' '.join(words + [cls.name])


@functools.lru_cache(maxsize=1)
def _target_vocabulary():
    """Sorted anatomical target names; descriptor values (as word lists) per kind in
    :data:`DESCRIPTOR_ORDER`; ``(name words, plural words)`` per lesion class."""
    ontology = load_ontology()
    # as lesion_canonical writes them
    descriptors = tuple(tuple(tuple((f'{v}-territory' if kind == 'territory' else v).split(' '))
                              for v in ontology.descriptors[kind].values)
                        for kind in DESCRIPTOR_ORDER)
    classes = tuple((tuple(c.name.split(' ')), tuple(c.plural.split(' ')))
                    for c in ontology.lesion_classes.values())
    return sorted(ontology.targets), descriptors, classes


def _lesion_words(state):
    """``(word, next state)`` pairs after a lesion-name state ``(kind index, every, pending
    words, pending is the class, done, started)``."""
    kind, every, pending, is_class, done, started = state
    if done:
        return []
    if pending:
        return [(pending[0], (kind, every, pending[1:], is_class, is_class and len(pending) == 1, True))]
    _, descriptors, classes = _target_vocabulary()
    options = [] if started else [('all', (0, True, (), False, False, True))]
    for index in range(kind, len(descriptors)):
        for words in descriptors[index]:
            options.append((words[0], (index + 1, every, words[1:], False, False, True)))
    for name, plural in classes:
        words = plural if every else name
        options.append((words[0], (len(descriptors), every, words[1:], True, len(words) == 1, True)))
    return options


def is_target_name(text: str, complete: bool = True) -> bool:
    """Whether ``text`` is a target name the task world writes (an anatomical target or a
    canonical lesion name, :func:`lesion_canonical`), or with ``complete=False`` the start
    of one (constrained decoding of ``segment``'s target)."""
    import bisect
    names = _target_vocabulary()[0]
    at = bisect.bisect_left(names, text)
    if at < len(names) and (names[at] == text if complete else names[at].startswith(text)):
        return True
    words = text.split(' ')
    done, last = (words, None) if complete else (words[:-1], words[-1])
    states = {(0, False, (), False, False, False)}
    for word in done:
        states = {after for state in states for option, after in _lesion_words(state) if option == word}
        if not states:
            return False
    if complete:
        return any(state[4] for state in states)
    return any(option.startswith(last) for state in states for option, _ in _lesion_words(state))


def parse_target(text: str) -> 'AnatomyTarget | LesionQuery':
    """Map a target program's target text back to an anatomical target or lesion query.

    Accepts the canonical forms :func:`load_ontology` and :func:`lesion_canonical` write.

    Raises:
        KeyError: When the text names nothing in the ontology.
    """
    ontology = load_ontology()
    cleaned = ' '.join(text.strip().split())
    if cleaned in ontology.targets:
        return ontology.targets[cleaned]
    words = cleaned.split(' ')
    every = bool(words) and words[0] == 'all'
    if every:
        words = words[1:]
    values = {}
    for kind, descriptor in ontology.descriptors.items():
        for value in descriptor.values:
            values[value] = kind
    tags = {}
    # descriptor values may hold spaces ("deep grey"): match greedily from the left
    multiword = sorted((v for v in values if ' ' in v), key=len, reverse=True)
    while words:
        matched = False
        for value in multiword:
            parts = value.split(' ')
            if words[:len(parts)] == parts:
                tags[values[value]] = value
                words = words[len(parts):]
                matched = True
                break
        if matched:
            continue
        word = words[0]
        territory = re.fullmatch(r'(ACA|MCA|PCA)-territory', word)
        if territory:
            tags['territory'] = territory.group(1)
        elif word in values and values[word] != 'territory':
            tags[values[word]] = word
        else:
            break
        words = words[1:]
    term = ' '.join(words)
    by_term = ontology.class_by_term()
    if term not in by_term:
        raise KeyError(f'unknown target {text!r}')
    return LesionQuery(by_term[term], tuple(sorted(tags.items())), every)
