"""Paraphrase families: a second source of prompts, independent of the template table.

Users do not write templates. The families of ``data/paraphrases.toml`` phrase every task
category the way people do (lay words, clinical shorthand, several sentences, questions
and commands); :func:`surface` then adds what real typing adds (wrong case and
punctuation, typos, hyphen variants, shorthand target names, politeness).

Families marked ``split = "eval"`` are held out of training whole (not single prompts):
training draws the others (:func:`paraphrase_prompt` with ``split="train"``), the
``paraphrases`` evaluation suite draws only them. The task writer binds the same runtime
slots as for templates (``{roi}``, ``{roi2}``, ``{margin}``, ...), so a paraphrase asks
for exactly the task its target program computes.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import tomllib

import numpy as np

from vpcli.tasks.drafts import Unwritable
from vpcli.tasks.ontology import DATA_DIR
from vpcli.tasks.slot_expansion import expand
from vpcli.tasks.templates import CATEGORIES, FILTERS as _FILTERS, filters_fit

PARAPHRASES = DATA_DIR / 'paraphrases.toml'
SPLITS = ('train', 'eval')

#: chances of each surface change (independent draws per prompt)
SHORTHAND_PROBABILITY = 0.35
TYPO_PROBABILITY = 0.2
HYPHEN_PROBABILITY = 0.1
LOWER_PROBABILITY = 0.2
UPPER_PROBABILITY = 0.03
CAPITALISE_PROBABILITY = 0.3
PUNCTUATION_PROBABILITY = 0.35
POLITENESS_PROBABILITY = 0.15


@dataclasses.dataclass(frozen=True)
class Family:
    """One family of phrasings of one category.

    Attributes:
        category: Task category.
        name: Family name, unique within the category.
        texts: Phrasings with ``{slot}`` references.
        filters: As template filters (absent: every task; no ``variant``: ``basic`` only).
        split: ``train`` or ``eval`` (held out of training).
        weight: How often the family is drawn relative to the others that fit a task (1: as
            often; the composed frames, which hold many sentences each, have more).
    """
    category: str
    name: str
    texts: tuple[str, ...]
    filters: tuple[tuple[str, str], ...]
    split: str
    weight: float = 1.0

    def fits(self, **task: str | None) -> bool:
        """True when every filter equals the task's value (:func:`filters_fit`)."""
        return filters_fit(self.filters, task)


@dataclasses.dataclass(frozen=True)
class Paraphrases:
    """The parsed data file."""
    families: tuple[Family, ...]
    slots: dict[str, tuple[str, ...]]
    shorthand: dict[str, tuple[str, ...]]


@functools.lru_cache(maxsize=1)
def load_paraphrases() -> Paraphrases:
    """Read ``data/paraphrases.toml`` (checked: known categories, filters, splits and
    weights). The ``[compose]`` table's phrasing parts join the ``[slots]``."""
    with open(PARAPHRASES, 'rb') as file:
        raw = tomllib.load(file)
    families, seen = [], set()
    for index, entry in enumerate(raw['family']):
        where = f'{PARAPHRASES}: family {index}'
        unknown = set(entry) - {'category', 'name', 'texts', 'split', 'weight', *_FILTERS}
        if unknown:
            raise ValueError(f'{where} has unknown fields {sorted(unknown)}')
        if entry['category'] not in CATEGORIES:
            raise ValueError(f'{where}: unknown category {entry["category"]!r}')
        split = entry.get('split', 'train')
        if split not in SPLITS:
            raise ValueError(f'{where}: split {split!r} is not one of {SPLITS}')
        key = (entry['category'], entry['name'], tuple(sorted((k, entry[k]) for k in _FILTERS
                                                             if k in entry)))
        if key in seen:
            raise ValueError(f'{where}: family {entry["name"]!r} appears twice')
        seen.add(key)
        weight = float(entry.get('weight', 1.0))
        if not weight > 0:
            raise ValueError(f'{where}: weight {weight!r} is not positive')
        families.append(Family(entry['category'], entry['name'], tuple(entry['texts']),
                               tuple(sorted((k, entry[k]) for k in _FILTERS if k in entry)), split,
                               weight))
    slots = {name: tuple(values) for name, values in raw['slots'].items()}
    for name, values in raw.get('compose', {}).items():
        if name in slots:
            raise ValueError(f'{PARAPHRASES}: slot {name!r} is in both [slots] and [compose]')
        slots[name] = tuple(values)
    shorthand = {name: tuple(values) for name, values in raw['shorthand'].items()}
    return Paraphrases(tuple(families), slots, shorthand)


def families(category: str, split: str) -> list[Family]:
    """The families of ``category`` in ``split``."""
    if split not in SPLITS:
        raise ValueError(f'split {split!r} is not one of {SPLITS}')
    return [f for f in load_paraphrases().families if f.category == category and f.split == split]


#: shorthand entries that are sides, not structures
_SIDES = ('left', 'right', 'bilateral')


def shorthand_words() -> frozenset[str]:
    """Every word the shorthand table writes for a structure (not the side words): the
    refusal gate counts them as brain terms (``hippo``, ``wm``, ``icv``)."""
    words = set()
    for phrase, forms in load_paraphrases().shorthand.items():
        if phrase in _SIDES:
            continue
        for form in forms:
            words.update(re.findall(r'[a-z][a-z0-9]+', form.lower()))
    return frozenset(words)


def paraphrase_prompt(category: str, filters: dict, bindings: dict, split: str,
                      rng: np.random.Generator) -> str:
    """A prompt for a task from a family of ``split`` that fits ``filters``.

    Args:
        category: Task category.
        filters: The task's filter values (``variant``, ``axis``, ``direction``, ``modality``).
        bindings: The writer's runtime slots (``roi``, ``roi_bare``, ...).
        split: ``train`` or ``eval``.
        rng: The generator.

    Raises:
        Unwritable: No family of the split fits the task.
    """
    from vpcli.tasks.roi import shared_slots
    options = [f for f in families(category, split) if f.fits(**filters)]
    if not options:
        raise Unwritable(f'no {split} paraphrase family of {category} fits {filters}')
    weights = np.array([f.weight for f in options])
    if np.all(weights == 1.0):   # the draw every split made before weights existed
        family = options[int(rng.integers(len(options)))]
    else:
        family = options[int(rng.choice(len(options), p=weights / weights.sum()))]
    text = family.texts[int(rng.integers(len(family.texts)))]
    data = load_paraphrases()
    slots = {**shared_slots(), **data.slots}
    axis = filters.get('axis')
    if axis:
        slots.update(axis_slots(axis))
    roi_keys = [k for k in bindings if k.startswith('roi')]
    bound = {k: (shorthand(v, rng) if k in roi_keys else v,) for k, v in bindings.items()}
    slots.update(bound)
    prompt = expand(text, slots, rng, where=f'paraphrase family {category}/{family.name}')
    return surface(prompt, rng)


#: phrasing slots whose words depend on the task's axis (``{lay_axis}`` -> ``{lay_axis_si}``)
AXIS_SLOTS = ('lay_axis', 'short_axis', 'lay_length', 'axis_dir')


def axis_slots(axis: str) -> dict[str, tuple[str, ...]]:
    """The axis-bound slots for ``axis`` (``lr``, ``ap`` or ``si``)."""
    return {name: (f'{{{name}_{axis}}}',) for name in AXIS_SLOTS}


def shorthand(text: str, rng: np.random.Generator,
              probability: float = SHORTHAND_PROBABILITY) -> str:
    """With ``probability``, each phrase of the shorthand table found in ``text`` (whole
    words, longest first) becomes one of its short forms (``left hippocampus`` ->
    ``L hippo``)."""
    table = load_paraphrases().shorthand
    if rng.random() >= probability:
        return text
    for phrase in sorted(table, key=len, reverse=True):
        pattern = re.compile(r'(?<![\w-])' + re.escape(phrase) + r'(?![\w-])', re.IGNORECASE)
        if pattern.search(text):
            forms = table[phrase]
            form = forms[int(rng.integers(len(forms)))]
            text = pattern.sub(lambda _: form, text)
    return text


def _typo(word: str, rng: np.random.Generator) -> str:
    """One keyboard slip inside ``word``: two letters swapped, one dropped or one doubled."""
    at = int(rng.integers(1, len(word) - 2))
    kind = int(rng.integers(3))
    if kind == 0:
        return word[:at] + word[at + 1] + word[at] + word[at + 2:]
    if kind == 1:
        return word[:at] + word[at + 1:]
    return word[:at] + word[at] + word[at:]


def surface(text: str, rng: np.random.Generator) -> str:
    """What typing adds to a phrasing: a typo in a long word, hyphen variants, politeness,
    wrong case, dropped or doubled punctuation. Numbers and scan names are never changed."""
    words = text.split(' ')
    if rng.random() < TYPO_PROBABILITY:
        long = [i for i, w in enumerate(words) if len(w) >= 6 and w.isalpha()]
        if long:
            i = long[int(rng.integers(len(long)))]
            words[i] = _typo(words[i], rng)
    text = ' '.join(words)
    if rng.random() < HYPHEN_PROBABILITY:
        if '-' in text:
            text = re.sub(r'(?<=[a-z])-(?=[a-z])', ' ', text, count=1)
        else:
            pairs = [m.start() for m in re.finditer(r'(?<=[a-z]{4}) (?=[a-z]{4})', text)]
            if pairs:
                at = pairs[int(rng.integers(len(pairs)))]
                text = text[:at] + '-' + text[at + 1:]
    if rng.random() < POLITENESS_PROBABILITY:
        polite = ('please ', 'pls ', 'kindly ') if rng.random() < 0.5 else (' please', ', thanks', ' thx')
        text = polite[int(rng.integers(3))] + text if polite[0].endswith(' ') \
            else text.rstrip('?.!') + polite[int(rng.integers(3))]
    draw = rng.random()
    if draw < UPPER_PROBABILITY:
        text = _keep_names(text, str.upper)
    elif draw < UPPER_PROBABILITY + LOWER_PROBABILITY:
        text = _keep_names(text, str.lower)
    elif draw < UPPER_PROBABILITY + LOWER_PROBABILITY + CAPITALISE_PROBABILITY:
        text = text[:1].upper() + text[1:]
    if rng.random() < PUNCTUATION_PROBABILITY:
        end = ('', '', '.', '?', '??', '!', ' ?')[int(rng.integers(7))]
        text = text.rstrip('?.! ') + end
    return ' '.join(text.split())


def _keep_names(text: str, change) -> str:
    """``change`` the case of ``text`` except scan names (``img0``)."""
    parts = re.split(r'(\bimg\d+\b)', text)
    return ''.join(part if re.fullmatch(r'img\d+', part) else change(part) for part in parts)
