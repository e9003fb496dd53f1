"""Comparison: differences, changes, asymmetry and ratios of measured numbers, and time.

The arithmetic functions take two numbers, or two tuples of the same length (e.g. two
``center_of_mass`` or ``bbox`` results), which are compared element by element. The
result keeps the unit of the inputs (``difference``) or is a percentage / ratio.
"""

from __future__ import annotations

from typing import Callable

from vpcli.errors import BadInputError, ProgramError
from vpcli.library.masks import require_number, require_scan
from vpcli.library.registry import agent_function
from vpcli.library.context import RunContext
from vpcli.volumes import Scan, modality_label


def _elementwise(function: str, first, second, combine: Callable[[float, float], float],
                 names: tuple[str, str]):
    """Apply ``combine`` to two numbers, or pairwise to two equal-length tuples."""
    if isinstance(first, (tuple, list)) or isinstance(second, (tuple, list)):
        if not (isinstance(first, (tuple, list)) and isinstance(second, (tuple, list))):
            raise ProgramError(f'{function}: {names[0]} and {names[1]} must both be numbers or '
                               f'both be tuples')
        if len(first) != len(second):
            raise ProgramError(f'{function}: {names[0]} has {len(first)} values but {names[1]} '
                               f'has {len(second)}')
        return tuple(_elementwise(function, a, b, combine, names) for a, b in zip(first, second))
    return combine(require_number(function, first, names[0]),
                   require_number(function, second, names[1]))


@agent_function('comparison', returns='float or tuple, unit of the inputs')
def difference(a, b):
    """Difference ``b - a`` (how much the second value exceeds the first).

    Positive when ``b`` is larger; e.g. ``difference(volume(before), volume(after))``
    is the growth in mL.

    Args:
        a: The first (reference) number, or a tuple of numbers.
        b: The second number, or a tuple of the same length (same unit as ``a``).

    Returns:
        ``b - a`` in the unit of the inputs (element by element for tuples).
    """
    return _elementwise('difference', a, b, lambda x, y: y - x, ('a', 'b'))


def _percent_change(before: float, after: float) -> float:
    if before == 0:
        raise ProgramError('percent_change: before is 0, so a relative change is undefined')
    return 100.0 * (after - before) / abs(before)


@agent_function('comparison', returns='float or tuple, %')
def percent_change(before, after):
    """Relative change from ``before`` to ``after``, in percent.

    Computed as 100 * (after - before) / |before|: positive for growth, negative for
    shrinkage (e.g. 2.0 mL -> 3.0 mL is +50 %).

    Args:
        before: The earlier (reference) value, non-zero; a number or a tuple.
        after: The later value, same unit (and length) as ``before``.

    Returns:
        Percent change (element by element for tuples).

    Raises:
        ProgramError: when ``before`` is 0.
    """
    return _elementwise('percent_change', before, after, _percent_change, ('before', 'after'))


def _asymmetry(left: float, right: float) -> float:
    if left + right == 0:
        raise ProgramError('asymmetry: left + right is 0, so the asymmetry index is undefined')
    return 100.0 * (left - right) / ((left + right) / 2.0)


@agent_function('comparison', returns='float or tuple, %')
def asymmetry(left, right):
    """Left-right asymmetry index, in percent.

    Computed as 100 * (L - R) / ((L + R) / 2): the difference relative to the mean of
    both sides. Positive when the left value is larger; 0 for perfect symmetry; the
    range is -200 to +200 for non-negative values (e.g. volumes).

    Args:
        left: The left-side value (e.g. ``volume`` of the left structure).
        right: The right-side value, same unit.

    Returns:
        Asymmetry index in percent (element by element for tuples).

    Raises:
        ProgramError: when L + R is 0.
    """
    return _elementwise('asymmetry', left, right, _asymmetry, ('left', 'right'))


def _ratio(a: float, b: float) -> float:
    if b == 0:
        raise ProgramError('ratio: b is 0, so a / b is undefined')
    return a / b


@agent_function('comparison', returns='float or tuple, ratio (unitless when a and b share a unit)')
def ratio(a, b):
    """Ratio ``a / b``, e.g. a structure's volume relative to the whole brain.

    Args:
        a: The numerator, a number or a tuple.
        b: The denominator, non-zero; same unit (and length) as ``a``.

    Returns:
        ``a / b`` (element by element for tuples); multiply by 100 for percent.

    Raises:
        ProgramError: when ``b`` is 0.
    """
    return _elementwise('ratio', a, b, _ratio, ('a', 'b'))


@agent_function('comparison', returns='int, days')
def days_between(scan_a: Scan, scan_b: Scan) -> int:
    """Days from the acquisition of ``scan_a`` to that of ``scan_b``.

    Dates come from each scan's metadata (JSON sidecar ``AcquisitionDateTime`` or
    ``AcquisitionDate``, else a date-like BIDS session label). Positive when
    ``scan_b`` was acquired later. Use with ``difference`` for rates, e.g.
    ``difference(v0, v1) / days_between(img0, img1) * 365.25`` mL per year.

    Args:
        scan_a: The earlier (reference) scan.
        scan_b: The later scan.

    Returns:
        Whole days ``date(scan_b) - date(scan_a)``.

    Raises:
        BadInputError: when either scan's acquisition date is unknown.
    """
    for parameter, scan in (('scan_a', scan_a), ('scan_b', scan_b)):
        require_scan('days_between', scan, parameter)
        if scan.date is None:
            raise BadInputError(
                f'days_between: acquisition date of {scan.label} is unknown (give a JSON sidecar '
                f'with AcquisitionDateTime or AcquisitionDate, or a date-like session such as '
                f'ses-20210304)')
    return int((scan_b.date - scan_a.date).days)



@agent_function('comparison', returns='image: one of the input scans')
def find_scan(context: RunContext, modality: str, session: int = 0) -> Scan:
    """The scan of a modality in one session, as the scan lines name modalities.

    Sessions are counted in time order from 0, as ``segment`` orders its masks (scans
    with equal session labels form a session). Use it to measure on the scan the prompt
    names: ``flair = find_scan("FLAIR")``, then ``resample_mask(roi, flair)`` and
    ``mean_intensity(flair, ...)``; ``find_scan("FLAIR", 1)`` for the second session.
    Where a session holds a T1w before and after contrast, ``find_scan("T1w")`` is the
    one before and ``find_scan("T1w post-contrast")`` the one after, as the scan lines
    name them; a lone post-contrast T1w is also found by ``"T1w"``.

    Args:
        modality: ``T1w``, ``T2w``, ``FLAIR``, ``PD``, ``GRE``, ``DWI``, ``ADC`` or ``CT``,
            or ``T1w post-contrast``.
        session: Which session, 0 for the first (oldest).

    Returns:
        The one scan of that modality in that session.

    Raises:
        ProgramError: when the session does not exist, or it has no scan or several scans
            of that modality.
    """
    from vpcli.vision.model import session_groups

    if not isinstance(modality, str):
        raise ProgramError(f'find_scan: modality must be a text such as "FLAIR", got {modality!r}')
    if isinstance(session, bool) or not isinstance(session, int):
        raise ProgramError(f'find_scan: session must be a whole number (0 for the first), got {session!r}')
    groups = session_groups(context.scans)
    if not 0 <= session < len(groups):
        raise ProgramError(f'find_scan: session {session} does not exist; the scans form '
                           f'{len(groups)} session(s), numbered from 0')
    in_session = [context.scans[i] for i in groups[session]]
    wanted = ' '.join(modality.split()).lower()
    # the scan line's name first ("T1w" / "T1w post-contrast"), then the bare modality
    found = ([s for s in in_session if modality_label(s.modality, s.contrast).lower() == wanted]
             or [s for s in in_session if s.modality.lower() == wanted])
    if len(found) != 1:
        names = ', '.join(f'{s.name} ({modality_label(s.modality, s.contrast)})' for s in in_session)
        problem = 'no' if not found else f'{len(found)}'
        raise ProgramError(f'find_scan: {problem} {modality} scan(s) in session {session} ({names})')
    return found[0]
