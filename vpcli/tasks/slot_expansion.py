"""Prompt templates with nested synonym slots.

A template is text with ``{slot}`` references. A slot is a list of alternatives; an
alternative may itself hold slots (recursion, VoxelPrompt §3.2: "derive a {noun phrase}"),
and an empty alternative makes a slot optional. Expanding a template picks one alternative
per slot occurrence. Whitespace is normalised after expansion, so optional words leave no
double spaces.
"""

from __future__ import annotations

import re
from typing import Iterator, Mapping, Sequence

import numpy as np

SLOT = re.compile(r'\{([A-Za-z_][A-Za-z0-9_]*)\}')

#: guards against a slot that (indirectly) contains itself
MAX_DEPTH = 12


class TemplateError(ValueError):
    """A template refers to a slot that does not exist, or slots recurse without end."""


Slots = Mapping[str, Sequence[str]]


def tidy(text: str) -> str:
    """Collapse whitespace and remove spaces left before punctuation by empty slots."""
    text = ' '.join(text.split())
    return re.sub(r' ([?!,.:;)])', r'\1', text).replace('( ', '(')


def slot_references(text: str) -> list[str]:
    """Names of the slots ``text`` refers to, in order (repeats kept)."""
    return SLOT.findall(text)


def _alternatives(name: str, slots: Slots, where: str) -> Sequence[str]:
    if name not in slots:
        raise TemplateError(f'{where}: unknown slot {{{name}}}')
    alternatives = slots[name]
    if isinstance(alternatives, str):
        return (alternatives,)
    if not alternatives:
        raise TemplateError(f'{where}: slot {{{name}}} has no alternatives')
    return alternatives


def expand(text: str, slots: Slots, rng: np.random.Generator, where: str = 'template',
           _depth: int = 0) -> str:
    """One random expansion of ``text``: each slot occurrence picks an alternative uniformly.

    Args:
        text: Template text.
        slots: Slot name -> alternatives (strings; a single string is one alternative).
        rng: Random generator (the only source of randomness).
        where: Names the template in errors.

    Raises:
        TemplateError: Unknown slot or runaway recursion.
    """
    if _depth > MAX_DEPTH:
        raise TemplateError(f'{where}: slots nest deeper than {MAX_DEPTH} (a slot contains itself?)')

    def pick(match: re.Match) -> str:
        alternatives = _alternatives(match.group(1), slots, where)
        choice = alternatives[int(rng.integers(len(alternatives)))]
        return expand(choice, slots, rng, where, _depth + 1)

    result = SLOT.sub(pick, text)
    return tidy(result) if _depth == 0 else result


def iter_expansions(text: str, slots: Slots, where: str = 'template',
                    _depth: int = 0) -> Iterator[str]:
    """Every expansion of ``text`` (every alternative of every slot occurrence, recursively).

    The count can be large; callers slice the iterator or use :func:`count_expansions`.
    Results are tidied; duplicates (different paths giving the same text) are kept.
    """
    if _depth > MAX_DEPTH:
        raise TemplateError(f'{where}: slots nest deeper than {MAX_DEPTH} (a slot contains itself?)')
    match = SLOT.search(text)
    if match is None:
        yield tidy(text) if _depth == 0 else text
        return
    head, tail = text[:match.start()], text[match.end():]
    for alternative in _alternatives(match.group(1), slots, where):
        for inner in iter_expansions(alternative, slots, where, _depth + 1):
            for rest in iter_expansions(tail, slots, where, _depth + 1):
                combined = head + inner + rest
                yield tidy(combined) if _depth == 0 else combined


def count_expansions(text: str, slots: Slots, where: str = 'template', _depth: int = 0) -> int:
    """Number of expansion paths of ``text`` (product over slots of summed alternatives)."""
    if _depth > MAX_DEPTH:
        raise TemplateError(f'{where}: slots nest deeper than {MAX_DEPTH} (a slot contains itself?)')
    total = 1
    for name in slot_references(text):
        total *= sum(count_expansions(alt, slots, where, _depth + 1)
                     for alt in _alternatives(name, slots, where))
    return total


def reachable_alternatives(text: str, slots: Slots, where: str = 'template',
                           _seen: set | None = None) -> set[tuple[str, int]]:
    """Every (slot, alternative index) some expansion of ``text`` uses.

    A test compares this with all alternatives of all slots to find dead entries.
    """
    seen = set() if _seen is None else _seen
    for name in slot_references(text):
        for index, alternative in enumerate(_alternatives(name, slots, where)):
            if (name, index) not in seen:
                seen.add((name, index))
                reachable_alternatives(alternative, slots, where, seen)
    return seen
