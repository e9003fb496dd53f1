"""The sandbox: allowed programs run, data flow is tracked, errors name step and line."""

from __future__ import annotations

import ast
import time

import pytest
import torch
import voxel as vx

from conftest import make_geometry
from vpcli.errors import ProgramError, RefusedError
from vpcli.library.context import RunContext
from vpcli.library.registry import LibraryFunction, registry
from vpcli.sandbox import (Limits, Sandbox, Step, format_program, normalize_code, split_program,
                           validate_program)
from vpcli.volumes import Scan, SourceRef
import datetime as dt


def _label_scan(name: str, labels: torch.Tensor, **meta) -> Scan:
    geometry = make_geometry(tuple(labels.shape), (0.7, 0.9, 4.0), 'LPS', rotation_deg=(10, 0, 5))
    return Scan(vx.Volume(labels.unsqueeze(0).to(torch.int32), geometry), name,
                modality='labelmap', sources=(SourceRef(name, f'{name}.nii.gz'),), **meta)


@pytest.fixture
def scans() -> list[Scan]:
    generator = torch.Generator().manual_seed(0)
    first = torch.randint(0, 3, (6, 5, 4), generator=generator)
    second = torch.randint(0, 3, (6, 5, 4), generator=generator)
    return [_label_scan('img0', first, date=dt.date(2020, 1, 2), session='01'),
            _label_scan('img1', second, date=dt.date(2021, 3, 4), session='02')]


@pytest.fixture
def sandbox(scans) -> Sandbox:
    return Sandbox(RunContext(scans=scans), step_timeout_s=10)


def test_arithmetic_and_literals(sandbox):
    sandbox.run_step('a = 7 // 2 + 2 ** 10 - 5 % 3\nb = -a / 4\nc = (1, 2.5, "x", None, True)\n'
                     'd = [1, 2] + [3]\ne = a > 100 and not b > 0\nf = "yes" if e else "no"\n'
                     'g = 1 < 2 <= 2 != 3\nh = round(3.14159, 2)\ni = max(1, 5, 3) + min((4, 2))\n'
                     'j = abs(-3) + len(d) + int("4") + float("0.5")\nk = str(1.5) + str(None)\n'
                     'l = 3 in d\nm = "ab" * 3')
    values = {name: sandbox.value(name) for name in 'abcdefghijklm'}
    assert values == {'a': 3 + 1024 - 2, 'b': -(3 + 1024 - 2) / 4, 'c': (1, 2.5, 'x', None, True),
                      'd': [1, 2, 3], 'e': True, 'f': 'yes', 'g': True, 'h': 3.14, 'i': 7,
                      'j': 3 + 3 + 4 + 0.5, 'k': '1.5None', 'l': True, 'm': 'ababab'}


def test_fstrings_unpacking_and_persistent_namespace(sandbox):
    sandbox.run_step('v, w = (12.3456, 7)\nname = "grey"')
    sandbox.run_step('text = f"{name}: {v:.1f} mL, {w:>4d}|{v:,.2f}|{0.25:.0%}|{img0.date} {img1.session}"\n'
                     'item = (v, w)[1]\nnested = [[1, 2], [3, 4]][1][0]')
    assert sandbox.value('text') == 'grey: 12.3 mL,    7|12.35|25%|2020-01-02 02'
    assert sandbox.value('item') == 7 and sandbox.value('nested') == 3
    # a later step sees everything an earlier one assigned
    sandbox.run_step('total = v + w + item')
    assert sandbox.value('total') == pytest.approx(12.3456 + 14)
    assert [r.step.index for r in sandbox.records] == [1, 2, 3]


def test_scan_attributes_and_fstring_of_objects(sandbox):
    sandbox.run_step('m = img0.modality\ns = img1.name\nmask = select_labels(img0, 1)\n'
                     't = f"{img0} {mask}"')
    assert sandbox.value('m') == 'labelmap' and sandbox.value('s') == 'img1'
    assert sandbox.value('t') == 'img0 mask "labels 1"'


def test_phi_constant_step_replays(sandbox):
    phi = [[[round(0.01 * i - 0.1 * j, 3) for i in range(32)] for j in range(4)]]
    sandbox.run_step(f'PHI = {phi!r}')
    sandbox.run_step('first = PHI[0][1][2]')
    assert sandbox.value('PHI') == phi and sandbox.value('first') == phi[0][1][2]


@pytest.mark.slow
def test_large_phi_table_within_limit_runs_fast(sandbox):
    rows = ','.join('[' + ','.join(['-0.123456'] * 32) + ']' for _ in range(3000))  # 96k numbers
    started = time.monotonic()
    sandbox.run_step(f'PHI = [{rows}]')
    assert len(sandbox.value('PHI')) == 3000 and sandbox.value('PHI')[0][0] == -0.123456
    assert time.monotonic() - started < 15  # generous: 2 shared CPU cores
    with pytest.raises(RefusedError, match='more than 100000 items'):
        sandbox.validate('TOO_BIG = [' + '0,' * 100_001 + ']')


def test_library_calls_track_sources_and_units(sandbox, scans):
    context = sandbox.context
    sandbox.run_step('a = select_labels(img0, (1, 2))\nb = select_labels(img1, 2)\n'
                     'va = volume(a)\nvb = volume(b)\nread(va)\n'
                     'output("a", va, "mL")\noutput("sum", va + vb, "mL")\n'
                     'output("tuple", (va, 1.0), "mL")\noutput("const", 3, "")\n'
                     'answer(f"{va:.3f}")\nsave(b, "second mask")')
    outputs = {o.name: o for o in context.outputs}
    assert outputs['a'].sources == scans[0].sources
    assert outputs['sum'].sources == scans[0].sources + scans[1].sources
    assert outputs['const'].sources == ()
    voxel_mm3 = abs(float(torch.linalg.det(scans[0].volume.geometry.tensor.double()[:3, :3])))
    expected = int(torch.isin(scans[0].volume.tensor, torch.tensor([1, 2])).sum()) * voxel_mm3 / 1000
    assert outputs['a'].value == pytest.approx(expected)
    assert context.saved[0].name == 'second mask' and context.saved[0].sources == scans[1].sources
    # read shows the number with the unit of the function that returned it
    assert sandbox.records[0].feedback[0].text == f'{expected:.6g} mL'
    assert context.answers == [f'{expected:.3f}']
    assert [m.description for m, _ in sandbox.named_masks] == ['labels 1, 2', 'labels 2']


def test_read_shows_masks_scans_and_to_feedback_objects(scans):
    from vpcli.library.context import FeedbackItem

    class Encoding:  # what the vision engineer's encodings provide
        sources = scans[0].sources

        def to_feedback(self):
            return FeedbackItem('encoding of img0', embeddings=torch.ones(1, 4))

    def encode_stub(context, scan):
        """Test stand-in for the vision encoder.

        Args:
            scan: A scan.

        Returns:
            An encoding.
        """
        return Encoding()

    functions = dict(registry())
    functions['encode'] = LibraryFunction('encode', encode_stub, 'vision', 'encoding', True)
    sandbox = Sandbox(RunContext(scans=scans), functions=functions)
    record = sandbox.run_step('read(select_labels(img0, 1))\nread(img1)\nenc = encode(img0)\n'
                              'read(enc)\noutput("n", volume(select_labels(img0, 1)), "mL")')
    texts = [item.text for item in record.feedback]
    assert texts[0].startswith('mask "labels 1" from img0: ') and texts[0].endswith(' mL')
    assert texts[1] == 'img1: labelmap, date 2021-03-04, session 02'
    assert texts[2] == 'encoding of img0' and record.feedback[2].embeddings.shape == (1, 4)


def test_runtime_errors_name_step_and_line(sandbox):
    sandbox.run_step('x = 1')
    with pytest.raises(ProgramError, match=r'^step 2, line 2: division by zero$'):
        sandbox.run_step('y = 2\nz = x / 0')
    with pytest.raises(ProgramError, match=r"^step 2, line 1: index 5 out of range for 2 items$"):
        sandbox.run_step('w = (1, 2)[5]')
    with pytest.raises(ProgramError, match=r'^step 2, line 1: select_labels: ids must be integers'):
        sandbox.run_step('m = select_labels(img0, "left")')
    with pytest.raises(ProgramError, match=r"step 2, line 1: .* only available on input scans"):
        sandbox.run_step('d = x.date')
    with pytest.raises(ProgramError, match='too large'):  # sizes are checked at run time too
        sandbox.run_step('n = 10 ** 9\ns = "a" * n')
    with pytest.raises(ProgramError, match='cannot unpack 2 values into 3 names'):
        sandbox.run_step('a, b, c = (1, 2)')
    step = split_program('# step 1\nq = 1\n\n# step 2\nq = x / 0\n', origin='prog.py')[1]
    with pytest.raises(ProgramError, match=r'^prog.py line 5 \(step 2\): division by zero$'):
        sandbox.run_step(step)


def test_library_exception_becomes_program_error(scans):
    def broken(mask):
        """Fails.

        Args:
            mask: A mask.

        Returns:
            Nothing.
        """
        raise RuntimeError('tensor shapes do not match\nsecond line')

    functions = dict(registry(), broken=LibraryFunction('broken', broken, 'morphometry', 'x', False))
    sandbox = Sandbox(RunContext(scans=scans), functions=functions)
    with pytest.raises(ProgramError, match=r'^step 1, line 1: broken\(\) failed: RuntimeError: '
                                           r'tensor shapes do not match$'):
        sandbox.run_step('broken(img0)')


def _slow_function(seconds):
    """Busy-waits in Python (a stand-in for a slow library call).

    Args:
        seconds: How long, in s.

    Returns:
        The time waited, in s.
    """
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        sum(range(1000))
    return seconds


def test_step_time_limit_interrupts_a_long_call(scans):
    functions = dict(registry(), slow=LibraryFunction('slow', _slow_function, 'morphometry',
                                                      'float, s', False))
    sandbox = Sandbox(RunContext(scans=scans), functions=functions, step_timeout_s=0.3)
    started = time.monotonic()
    with pytest.raises(ProgramError, match=r'^step 1, line 2: step exceeded its time limit of 0.3 s$'):
        sandbox.run_step('a = 1\nb = slow(30)\nc = 2')
    assert time.monotonic() - started < 5  # interrupted, not run to the end
    assert 'c' not in sandbox.namespace and sandbox.value('a') == 1
    # the limit is per step and the timer is cleared afterwards
    sandbox.run_step('d = slow(0.1)')
    time.sleep(0.4)
    assert sandbox.value('d') == 0.1


def test_step_time_limit_off_main_thread_is_reported(scans):
    import threading
    functions = dict(registry(), slow=LibraryFunction('slow', _slow_function, 'morphometry',
                                                      'float, s', False))
    sandbox = Sandbox(RunContext(scans=scans), functions=functions, step_timeout_s=0.2)
    errors = []

    def target():
        try:
            sandbox.run_step('b = slow(0.5)\nc = 1')
        except ProgramError as error:
            errors.append(str(error))
    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    assert errors == ['step 1, line 1: step exceeded its time limit of 0.2 s']


def test_split_and_format_program_round_trip():
    text = ('# header comment\n\n# step 1\nx = 1\n\n\n# Step 2\n  \ny = x + 1\n# a comment\n\n')
    steps = split_program(text, origin='p.py')
    assert [(s.index, s.code, s.first_line) for s in steps] == [
        (1, 'x = 1', 4), (2, 'y = x + 1\n# a comment', 9)]
    written = format_program(steps, ['made by a test', 'second line'])
    again = split_program(written, origin='script.py')
    assert [s.code for s in again] == [s.code for s in steps]
    assert written.startswith('# made by a test\n# second line\n\n# step 1\n')
    assert [s.code for s in split_program('a = 1\nb = 2\n')] == ['a = 1\nb = 2']
    assert normalize_code('\n\nx = 1\n\n') == 'x = 1'


@pytest.mark.parametrize('text, message', [
    ('x = 1\n# step 1\ny = 2\n', 'p.py line 1: code before the first "# step 1" marker'),
    ('# step 1\nx = 1\n# step 3\n', 'p.py line 3: expected "# step 2", found "# step 3"'),
])
def test_bad_step_markers(text, message):
    from vpcli.errors import BadInputError
    with pytest.raises(BadInputError, match=message):
        split_program(text, origin='p.py')


def test_whole_program_validated_before_running(sandbox):
    steps = split_program('# step 1\nx = 1\n# step 2\ny = x\n# step 3\nimport os\n')
    with pytest.raises(RefusedError, match='step 3, line 1: imports are not allowed'):
        sandbox.run_program(steps)
    assert 'x' not in sandbox.namespace and sandbox.records == []
    # names must be assigned in an earlier step (or line) before use
    with pytest.raises(RefusedError, match="step 1, line 1: unknown name 'later'"):
        validate_program(split_program('# step 1\na = later\n# step 2\nlater = 1\n'),
                         ['img0'], registry())


def test_wrong_arguments_refused_statically(sandbox):
    with pytest.raises(RefusedError, match=r"volume\(\): .*argument"):
        sandbox.validate('volume(img0, 3)')
    with pytest.raises(RefusedError, match=r"select_labels\(\): .*unexpected keyword argument 'x'"):
        sandbox.validate('select_labels(img0, 1, x=1)')
    with pytest.raises(RefusedError, match="cannot assign to 'volume'"):
        sandbox.validate('volume = 3')


def test_custom_limits(scans):
    sandbox = Sandbox(RunContext(scans=scans), limits=Limits(max_sequence_items=10))
    with pytest.raises(ProgramError, match='list longer than|longer than 10'):
        sandbox.run_step('n = 5\nx = [1, 2, 3] * n')


def test_values_carry_the_masks_they_were_computed_from(sandbox):
    """Quality control per measurement (docs/qc.md): every value knows the masks it derives
    from, through arithmetic, builtins, f-strings and library calls."""
    from vpcli.sandbox.values import union_masks
    assert union_masks(('a', 'b'), ('b', 'c')) == ('a', 'b', 'c')
    sandbox.run_step(Step(1, 'grey = select_labels(img1, 1)\nwhite = select_labels(img1, 2)\n'
                            'a = volume(grey)\nb = volume(white)\nt = a + 2 * b\n'
                            'output("total", t, "mL")\noutput("grey", round(a, 1), "mL")\n'
                            'output("text", f"{a}", "")\noutput("count", 3, "count")'))
    masks = {o.name: o.masks for o in sandbox.context.outputs}
    grey, white = (sandbox.namespace[n].value.description for n in ('grey', 'white'))
    assert grey != white
    assert masks == {'total': (grey, white), 'grey': (grey,), 'text': (grey,), 'count': ()}
