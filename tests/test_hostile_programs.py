"""Hostile programs: every one is refused before it runs, with no side effect.

Each program is handed to a sandbox that already holds a variable and an input scan.
Refusal must happen in validation (a :class:`RefusedError`, exit code 4), before any
statement runs: the canary file is not created, no module is imported, the namespace
and the run context are unchanged.
"""

from __future__ import annotations

import sys

import pytest
import torch
import voxel as vx

from conftest import make_geometry
from vpcli.errors import RefusedError
from vpcli.library.context import RunContext
from vpcli.library.registry import registry
from vpcli.sandbox import Sandbox
from vpcli.volumes import Scan, SourceRef

CANARY = '{canary}'  # replaced by the test's canary path

HOSTILE = {
    # imports
    'import': 'import os\nos.system("touch {canary}")',
    'import_from': 'from os import system\nsystem("touch {canary}")',
    'import_after_benign_line': 'x = 2\nimport subprocess',
    'dunder_import': '__import__("os").system("touch {canary}")',
    'dunder_import_name_only': 'm = __import__',
    'importlib_call': 'importlib("os")',
    # builtins that are not library functions
    'open_write': 'open("{canary}", "w").write("x")',
    'open_bare': 'f = open("{canary}", "w")',
    'eval': 'eval("__import__(\'os\')")',
    'exec': 'exec("open(\'{canary}\', \'w\')")',
    'compile': 'c = compile("1", "f", "exec")',
    'getattr': 'getattr(img0, "volume")',
    'setattr': 'setattr(img0, "name", "x")',
    'globals': 'g = globals()',
    'locals': 'l = locals()',
    'vars': 'v = vars(img0)',
    'dir': 'd = dir(img0)',
    'type': 't = type(img0)',
    'breakpoint': 'breakpoint()',
    'input': 'input()',
    'print': 'print("hi")',
    'help': 'help()',
    'memoryview': 'memoryview(b"x")',
    'range_loop_helper': 'r = range(10 ** 9)',
    'builtins_name': 'b = __builtins__',
    # dunder chains and attributes
    'dunder_class': 'c = x.__class__',
    'dunder_chain': 'c = ().__class__.__bases__[0].__subclasses__()',
    'dunder_globals': 'g = output.__globals__',
    'function_attribute': 'c = volume.__code__',
    'private_name': '_secret = 1',
    'private_attribute': 'p = img0._volume',
    'volume_attribute': 'v = img0.volume',
    'path_attribute': 'p = img0.path',
    'method_call': 'img0.derive(img0.volume, "x")',
    'string_method': 's = "a".upper()',
    'attribute_assignment': 'img0.name = "x"',
    'item_assignment': 'y = [1]\ny[0] = 2',
    # calls of non-names
    'call_of_call': 'x()()',
    'call_of_subscript': 'y = (volume,)[0](img0)',
    'function_as_value': 'f = volume',
    'unknown_function': 'z = frobnicate(img0)',
    # definitions and control flow
    'def': 'def f():\n    return 1',
    'async_def': 'async def f():\n    pass',
    'class': 'class A:\n    pass',
    'lambda': 'f = lambda: open("{canary}", "w")',
    'while_true': 'while True:\n    pass',
    'for_loop': 'for i in (1, 2):\n    x = i',
    'if_statement': 'if x:\n    y = 1',
    'with': 'with x:\n    pass',
    'try': 'try:\n    y = 1\nexcept Exception:\n    pass',
    'raise': 'raise SystemExit(1)',
    'del': 'del x',
    'global': 'global x',
    'assert': 'assert x',
    'return': 'return 1',
    # comprehensions, generators and odd expressions
    'list_comprehension': 'y = [i for i in (1, 2)]',
    'generator_expression': 'y = tuple(i for i in (1, 2))',
    'dict_literal': 'y = {"a": 1}',
    'set_literal': 'y = {1, 2}',
    'walrus': 'y = (z := 1)',
    'starred_call': 'y = max(*(1, 2))',
    'starred_assign': 'a, *b = (1, 2, 3)',
    'kwargs_unpack': 'y = round(1.5, **x)',
    'yield': 'y = (yield 1)',
    'await': 'y = await x',
    'slice': 'y = (1, 2, 3)[0:2]',
    'bitwise_shift': 'y = 1 << 100000',
    'matmul': 'y = x @ x',
    'bytes_literal': 'y = b"abc"',
    'complex_literal': 'y = 1j',
    'ellipsis': 'y = ...',
    # giant allocations and numbers
    'giant_string': 'y = "a" * 10 ** 9',
    'giant_power': 'y = 10 ** 10 ** 10',
    'giant_list': 'y = [0] * 10 ** 9',
    'giant_tuple': 'y = (1, 2) * 10 ** 8',
    'giant_string_concat_of_repeats': 'y = "ab" * 10 ** 6 + "c"',
    'giant_int_multiply': 'y = 10 ** 1000 * 10 ** 1000 * 10 ** 1000 * 10 ** 1000 * 10 ** 1000',
    'negative_base_power': 'y = (-7) ** 100000',
    'giant_literal_list': 'y = [' + '0, ' * 100_001 + ']',
    'giant_int_literal': 'y = ' + '9' * 1300,
    # format-string tricks
    'format_method_dunder': 'y = "{0.__class__}".format(x)',
    'format_method_plain': 'y = "{}".format(img0)',
    'fstring_dunder': 'y = f"{x.__class__}"',
    'fstring_conversion_r': 'y = f"{img0!r}"',
    'fstring_conversion_s': 'y = f"{img0!s}"',
    'fstring_conversion_a': 'y = f"{img0!a}"',
    'fstring_nested_spec': 'y = f"{x:{x}}"',
    'fstring_giant_width': 'y = f"{x:>1000000000}"',
    'fstring_attribute_spec': 'y = f"{img0:%Y}"',
    'percent_format': 'y = "%*d" % (10 ** 9, 1)',
    'percent_format_fstring': 'y = f"{x}%s" % x',
    'fstring_call_inside': 'y = f"{open(\'{canary}\', \'w\')}"',
    # syntax errors and parser abuse
    'syntax_error': 'y = (',
    'deep_nesting': 'y = ' + '(' * 300 + '1' + ')' * 300,
    'deep_unary': 'y = ' + '-' * 500 + '1',
    'null_byte': 'y = 1\x00',
}


@pytest.fixture(scope='module')
def scan() -> Scan:
    geometry = make_geometry((4, 4, 3), (0.7, 0.9, 4.0), 'LIA')
    return Scan(vx.Volume(torch.ones(1, 4, 4, 3, dtype=torch.int32), geometry), 'img0',
                modality='labelmap', sources=(SourceRef('img0', 'img0.nii.gz'),))


def test_corpus_is_large_enough():
    assert len(HOSTILE) >= 50


@pytest.mark.parametrize('name', sorted(HOSTILE))
def test_hostile_program_refused_without_side_effects(name, scan, tmp_path):
    registry()  # import the library once, so only the program could import anything
    canary = tmp_path / 'canary'
    program = HOSTILE[name].replace('{canary}', str(canary))
    context = RunContext(scans=[scan])
    sandbox = Sandbox(context, step_timeout_s=5)
    sandbox.run_step('x = 1')
    namespace_before = dict(sandbox.namespace)
    modules_before = set(sys.modules)

    with pytest.raises(RefusedError) as refused:
        sandbox.run_step(program)

    message = str(refused.value)
    assert message.startswith('step 2, line '), message
    assert '\n' not in message
    assert not canary.exists()
    assert set(sys.modules) == modules_before
    assert sandbox.namespace == namespace_before
    assert len(sandbox.records) == 1
    assert context.outputs == [] and context.answers == [] and context.saved == []
    assert scan.name == 'img0'


@pytest.mark.parametrize('program, rule', [
    ('import os', 'imports are not allowed'),
    ('while True:\n    pass', 'loops are not allowed'),
    ('y = x.__class__', 'dunder names are not allowed'),
    ('open("f")', "unknown function 'open'"),
    ('y = img0.volume', "attribute '.volume' is not allowed"),
    ('"{0.__class__}".format(x)', 'only library functions can be called'),
    ('y = "a" * 10 ** 9', 'too large'),
    ('y = f"{x!r}"', 'f-string conversions'),
    ('y = 1\nz = 2\ndef f(): pass', 'def is not allowed'),
])
def test_refusal_names_line_and_rule(program, rule, scan):
    sandbox = Sandbox(RunContext(scans=[scan]))
    sandbox.run_step('x = 1')
    with pytest.raises(RefusedError, match=rule) as refused:
        sandbox.validate(program)
    expected_line = program.count('\n') + 1 if 'def' in program else 1
    assert str(refused.value).startswith(f'step 2, line {expected_line}: ')
