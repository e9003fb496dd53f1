"""Typing slips read back before the language model reads a prompt.

A word of five or more letters that no training text holds, and that one keyboard slip
(a letter dropped, doubled or added, two neighbours swapped, one letter replaced) turns
into a word the training texts do hold (its last letter kept), is read as that word: ``chorooid plexus`` as
``choroid plexus``, ``tniiest`` as ``tiniest``. Where two known words are one slip away,
the one with the larger count in the vocabulary wins (a word of the training texts counts
its uses there, a word taken from training prompts its uses in them); an even tie leaves
the word as typed.
Shorter words, numbers, scan names (``img0``) and known words are never changed. A prompt
typed in capitals is read in lower case first (:func:`unshouted`).

The vocabulary (``data/vocabulary.tsv``, written by :func:`write_vocabulary`) is what
training shows the model: the words of the template tables, the shared phrasing slots,
the anatomy and lesion ontologies, the target names and the paraphrase families that are
not held out (``split = "eval"`` families are left out, so the evaluation's phrasings
stay unseen), and every word used at least :data:`MIN_SEEN` times in
:data:`VOCABULARY_PROMPTS` training prompts drawn as training draws them (words the task
code writes, ``millimeters``), except training's own typing slips (a word one slip from a
word used :data:`TYPO_RATIO` times as often).
The refusal gate and ``metrics.json`` keep the prompt as typed; ``metrics.json`` also
records what the model read when it differs (docs/agent.md).
"""

from __future__ import annotations

import collections
import functools
import re
import string
import tomllib
from importlib import resources

#: words shorter than this are read as typed (shorthand such as ``lt``, ``hippo``, ``WM``)
MIN_LENGTH = 5
#: training prompts drawn for the vocabulary, and how often a word must occur in them
VOCABULARY_PROMPTS = 20000
MIN_SEEN = 3
TYPO_RATIO = 20

_WORD = re.compile(r'[A-Za-z]+')
_SLOT = re.compile(r'\{[^{}]*\}')


def _strings(value) -> list[str]:
    """Every string inside a TOML value (tables and arrays walked)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for item in value.values() for s in _strings(item)]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return []


def _training_texts() -> list[str]:
    data = resources.files('vpcli.tasks') / 'data'
    texts = []
    for name in ('phrasing.toml', 'anatomy.toml', 'lesions.toml'):
        texts += _strings(tomllib.loads((data / name).read_text(encoding='utf-8')))
    for entry in sorted((data / 'templates').iterdir(), key=lambda e: e.name):
        if entry.name.endswith('.toml'):
            texts += _strings(tomllib.loads(entry.read_text(encoding='utf-8')))
    paraphrases = tomllib.loads((data / 'paraphrases.toml').read_text(encoding='utf-8'))
    texts += _strings({key: value for key, value in paraphrases.items() if key != 'family'})
    texts += _strings([family for family in paraphrases.get('family', [])
                       if family.get('split') != 'eval'])
    from vpcli.tasks.ontology import load_ontology
    texts += list(load_ontology().targets)
    return texts


def _counted(texts) -> collections.Counter:
    return collections.Counter(word.lower() for text in texts
                               for word in _WORD.findall(_SLOT.sub(' ', text)))


def build_vocabulary(prompts: int = VOCABULARY_PROMPTS, seed: int = 0) -> dict[str, int]:
    """The vocabulary from scratch: the training texts' words, and the words used at least
    :data:`MIN_SEEN` times in ``prompts`` training prompts (seeded), with their counts."""
    import numpy as np

    from vpcli.agent.corpus import sample_episodes
    counts = _counted(_training_texts())
    episodes = sample_episodes(np.random.default_rng([seed, 7919]), prompts, split='train',
                               paraphrase_fraction=0.5)
    seen = _counted(episode.prompt for episode in episodes)
    every = counts + seen
    # training's typing slips repeat (``fronal`` 8 times in 20,000 prompts): a word one slip
    # from a word used TYPO_RATIO times as often is a slip, not vocabulary
    counts.update({word: n for word, n in seen.items() if word not in counts and n >= MIN_SEEN
                   and not any(every.get(c, 0) > TYPO_RATIO * n for c in _one_slip(word))})
    return dict(counts)


def _vocabulary_file():
    return resources.files('vpcli.agent') / 'data' / 'vocabulary.tsv'


def write_vocabulary(path=None) -> int:
    """Write :func:`build_vocabulary` to ``path`` (default: the package's
    ``data/vocabulary.tsv``) as ``word<TAB>count`` lines; returns the word count."""
    from vpcli.volumes import write_text_atomic
    counts = build_vocabulary()
    lines = [f'{word}\t{counts[word]}' for word in sorted(counts)]
    write_text_atomic(path or _vocabulary_file(), '\n'.join(lines) + '\n')
    return len(lines)


@functools.lru_cache(maxsize=1)
def vocabulary() -> dict[str, int]:
    """The shipped vocabulary: lower-case word -> its count (uses in the training texts, or
    for a word taken from the training prompts, uses in them; see :func:`build_vocabulary`)."""
    rows = (line.split('\t') for line in _vocabulary_file().read_text(encoding='utf-8').splitlines())
    return {word: int(count) for word, count in rows}


def _one_slip(word: str) -> set[str]:
    """Every string one slip away from ``word`` that keeps its last letter: a letter
    dropped, two neighbours swapped, one letter replaced or one added, not at the end (a
    change there is an inflection as often as a slip: ``measures``, ``scanned``)."""
    splits = [(word[:i], word[i:]) for i in range(len(word))]
    letters = string.ascii_lowercase
    dropped = [a + b[1:] for a, b in splits if len(b) > 1]
    swapped = [a + b[1] + b[0] + b[2:] for a, b in splits if len(b) > 2]
    replaced = [a + c + b[1:] for a, b in splits if len(b) > 1 for c in letters]
    added = [a + c + b for a, b in splits for c in letters]
    return set(dropped + swapped + replaced + added) - {word}


def _cased_like(typed: str, word: str) -> str:
    if typed.isupper():
        return word.upper()
    if typed[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


def corrected_word(typed: str) -> str:
    """``typed`` read back: itself, or the known word one slip away (see the module)."""
    known = vocabulary()
    word = typed.lower()
    if len(word) < MIN_LENGTH or word in known:
        return typed
    near = sorted(((known[c], c) for c in _one_slip(word) if c in known), reverse=True)
    if not near or (len(near) > 1 and near[0][0] == near[1][0]):
        return typed
    return _cased_like(typed, near[0][1])


#: a prompt whose letters are at least this share capitals (and that has at least
#: :data:`SHOUTED_LETTERS` of them) is read in lower case
SHOUTED_SHARE = 0.9
SHOUTED_LETTERS = 12


def unshouted(prompt: str) -> str:
    """``prompt`` in lower case when it is typed in capitals (caps lock: ``WHAT IS THE
    LEFT HIPPOCAMPUS VOLUME``; ``IMG1`` is ``img1``), otherwise as typed. Training
    shows the model all-lower-case prompts often and all-capital ones rarely: on the
    held-out paraphrases every all-capital prompt (7 of 340) was missed at step 33,250."""
    letters = [c for c in prompt if c.isalpha()]
    if len(letters) < SHOUTED_LETTERS or sum(c.isupper() for c in letters) < SHOUTED_SHARE * len(letters):
        return prompt
    return prompt.lower()


def read_prompt(prompt: str) -> str:
    """The prompt as the model reads it: in lower case if it was typed in capitals
    (:func:`unshouted`), then each word :func:`corrected_word`; everything else (spacing,
    punctuation, numbers, scan names) as typed."""
    return _WORD.sub(lambda match: corrected_word(match.group(0)), unshouted(prompt))


if __name__ == '__main__':   # python -m vpcli.agent.spelling: rewrite data/vocabulary.tsv
    print(f'{write_vocabulary()} words written to {_vocabulary_file()}')
