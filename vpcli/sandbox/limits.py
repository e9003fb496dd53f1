"""Size bounds of a program, and the few scan attributes it may read."""

from __future__ import annotations

import dataclasses
import re


@dataclasses.dataclass(frozen=True)
class Limits:
    """Size bounds a program must stay within (checked before and while it runs).

    Attributes:
        max_source_chars: Longest program text (a φ table of 100k numbers fits).
        max_steps: Most steps in one program.
        max_statements_per_step: Most statements in one step.
        max_depth: Deepest expression nesting.
        max_literal_items: Most items in one list/tuple literal, nested items included
            (the φ tables ``PHI = [[[...]]]`` of a replayable script).
        max_sequence_items: Longest list/tuple a program may build.
        max_string_chars: Longest string a program may build.
        max_int_bits: Largest integer a program may build, in bits.
        max_round_digits: Largest ``ndigits`` for ``round``.
    """
    max_source_chars: int = 4_000_000
    max_steps: int = 500
    max_statements_per_step: int = 500
    max_depth: int = 60
    max_literal_items: int = 100_000
    max_sequence_items: int = 100_000
    max_string_chars: int = 100_000
    max_int_bits: int = 4096
    max_round_digits: int = 30


DEFAULT_LIMITS = Limits()

#: attributes a program may read, and only on input scans
SCAN_ATTRIBUTES = ('date', 'modality', 'session', 'name')

#: f-string format specs: alignment, sign, width (<= 3 digits), grouping, precision, type.
#: No nested fields, so a spec cannot reach an object or allocate without bound.
_FORMAT_SPEC = re.compile(r'^(?:[^{}\n]?[<>=^])?[+\- ]?z?#?0?(?:\d{1,3})?[,_]?(?:\.\d{1,2})?'
                          r'[bcdeEfFgGnosxX%]?$')

#: ``# step N`` marker lines that split a program file into steps
_STEP_MARKER = re.compile(r'^\s*#\s*step\s+(\d+)\s*$', re.IGNORECASE)
