"""The program-subset recognizer and the model-text <-> executable-code conversions."""

import ast

import pytest

from vpcli.agent.decoding_grammar import MOD_CHAR, Invalid, Scope, check_complete, check_prefix
from vpcli.agent.loop import library_scope
from vpcli.agent.model_text import join_steps, phi_step, split_steps, to_executable, to_model_text
from vpcli.sandbox import Sandbox, Step, validate_step
from vpcli.library.registry import registry

PROGRAM = '''# step 1
enc = encode(img0, img1)
read(enc)
masks = segment(enc, "left hippocampus")
# step 2
before = volume(masks[0])
after = volume(masks[1])
change = percent_change(before, after)
output("left hippocampus volume change", change, "%")
answer(f"It changed by {change:.1f} % over {days_between(img0, img1)} days" if change > 0 else "no growth")
# step 3
box = crop(img1, masks[1], margin_mm=5.0)
save(box, "cropped")
'''


def model_steps():
    streams = {'img0': None, 'img1': None}
    return [to_model_text(step, streams) for step in split_steps(PROGRAM)]


def test_every_prefix_of_valid_steps_is_accepted():
    scope = library_scope(['img0', 'img1'])
    for step in model_steps():
        text = step.replace('<MOD>', MOD_CHAR)
        rejected = [text[:i] for i in range(len(text) + 1) if not check_prefix(text[:i], scope)]
        assert rejected == []
        scope = check_complete(text, scope)
    assert scope.variables['enc'] == 2 and scope.variables['masks'] is None


def test_mod_rule_one_per_encoded_stream():
    steps = model_steps()
    assert 'encode(img0<MOD>, img1<MOD>)' in steps[0]
    assert "segment(enc, 'left hippocampus'<MOD><MOD>)" in steps[0]   # after the target
    scope = library_scope(['img0', 'img1'])
    check_complete('enc = encode(img0\x00)\nm = segment(enc, "brainstem"\x00)\n', scope)
    for wrong in ('enc = encode(img0)\n', 'enc = encode(img0\x00\x00)\n',
                  'enc = encode(img0\x00)\nm = segment(enc, "brainstem")\n',
                  'enc = encode(img0\x00)\nm = segment(enc, "brainstem"\x00\x00)\n',
                  'enc = encode(img0\x00)\nm = segment(enc\x00, "brainstem")\n',     # version 1
                  'enc = encode(img0\x00)\nm = segment(enc\x00, "brainstem"\x00)\n',
                  'm = volume(img0\x00)\n', 'enc = encode(img0\x00, phi=1)\n'):
        with pytest.raises(Invalid):
            check_complete(wrong, scope)


def test_the_agent_writes_only_segmentation_targets_of_the_vocabulary():
    from vpcli.tasks.ontology import is_target_name
    scope = check_complete('enc = encode(img0\x00)\n', library_scope(['img0']))
    for name in ('left hippocampus', 'whole brain', 'all edemas',
                 'hypointense left ACA-territory edema', 'largest frontal glioma'):
        assert is_target_name(name)
        text = f"m = segment(enc, '{name}'\x00)\n"
        check_complete(text, scope)
        assert all(check_prefix(text[:i], scope) for i in range(len(text) + 1))
    # names the task world never writes, and targets that are not a literal
    for wrong in ('bilateral frontal gyrus', 'bilateralall edemas', 'left  hippocampus',
                  'hippocampus left', 'all edema', 'frontal glioma largest', 'x'):
        assert not is_target_name(wrong)
        with pytest.raises(Invalid):
            check_complete(f"m = segment(enc, '{wrong}'\x00)\n", scope)
    assert not check_prefix("m = segment(enc, 'bilateral frontal gy", scope)
    assert check_prefix("m = segment(enc, 'bilateral frontal co", scope)      # ... cortex
    assert not check_prefix('m = segment(enc, img0', scope)
    # programs a person writes are not held to the vocabulary
    import dataclasses
    free = dataclasses.replace(scope, targets=None)
    check_complete("m = segment(enc, 'my own words'\x00)\n", free)


HOSTILE = [
    'import os\n', 'x = __import__("os")\n', 'x = open("/etc/passwd")\n', 'x = eval("1")\n',
    'x = img0.__class__\n', 'x = img0.volume\n', 'def f():\n', 'x = lambda: 1\n', 'while True:\n',
    'for i in range(9):\n', 'x = getattr(img0, "path")\n', 'x = globals()\n', '# comment\n',
    'x = 1; y = 2\n', 'PHI = [1]\n', 'encode = 3\n', 'x = undefined_name\n', 'img0\n',
    'x = volume(mask=img0, other=1)\n', 'x = f"{img0.__dict__}"\n', 'x = [i for i in img0]\n',
    'x = 1 << 400\n', 'x = compile("1", "f", "eval")\n', '  x = 1\n', 'x = "a\\nb"\n',
]


@pytest.mark.parametrize('text', HOSTILE)
def test_hostile_or_foreign_text_is_not_a_valid_step(text):
    scope = library_scope(['img0'])
    with pytest.raises(Invalid):
        check_complete(text, scope)


def test_executable_code_replays_phi_exactly_and_passes_the_sandbox():
    executable = [to_executable(step, 0) for step in model_steps()[:1]]
    assert executable[0].code.count('phi=PHI[') == 2
    assert 'encode(img0, img1, phi=PHI[0])' in executable[0].code
    assert "segment(enc, 'left hippocampus', phi=PHI[1])" in executable[0].code
    assert executable[0].phi_calls == [[0, 1], [2, 3]]
    phi = [[[0.1, -1e-7], [3.0, 2.5]], [[0.125, 1 / 3], [7.0, 8.0]]]
    constant = phi_step(phi)
    assert ast.literal_eval(constant.split('=', 1)[1]) == phi  # exact float round trip
    # the whole replayable script passes the sandbox's rules
    steps = [constant] + [to_executable(s, 0 if i == 0 else 2).code for i, s in enumerate(model_steps())]
    known = {'img0', 'img1'}
    for index, code in enumerate(steps, 1):
        validate_step(Step(index, code), known, registry())
        for node in ast.parse(code).body:
            if isinstance(node, ast.Assign):
                known.update(t.id for t in node.targets)
    assert join_steps(['a = 1\n', 'b = 2\n']) == '# step 1\na = 1\n# step 2\nb = 2\n'


def test_phi_constant_is_usable_in_the_sandbox():
    from vpcli.library.context import RunContext
    from vpcli.sandbox import Tracked

    sandbox = Sandbox(RunContext(scans=[]))
    sandbox.namespace['PHI'] = Tracked([[[0.5, 1.5]]], ())
    sandbox.run_step('x = PHI[0][0][1] * 2\n')
    assert sandbox.value('x') == 3.0


def test_calls_must_give_every_required_argument_and_no_extra_one():
    scope = library_scope(['img0', 'img1'])
    check_complete('c = percent_change(1, 2)\n', scope)
    check_complete('c = percent_change(1, after=2)\n', scope)
    check_complete('box = crop(img0, img1)\nbox = crop(img0, img1, 5)\n', scope)  # margin optional
    for wrong in ('c = percent_change(1)\n', 'c = percent_change(1, 2, 3)\n',
                  'c = percent_change(1, before=2)\n', 'c = percent_change(1, 2, before=3)\n',
                  'box = crop(img0)\n'):
        with pytest.raises(Invalid):
            check_complete(wrong, scope)
    assert check_prefix('c = percent_change(1', scope)        # can still be completed
    assert not check_prefix('c = percent_change(1)', scope)
    assert check_prefix('c = percent_change(1,', scope)


def test_the_decoder_writes_the_sandbox_language_only():
    """One program language: the decoder's builtins and attributes are the sandbox's, so it
    cannot write a call the sandbox refuses (``sum`` was allowed by the decoder alone)."""
    from vpcli.agent import decoding_grammar
    from vpcli.agent.loop import library_scope
    from vpcli.sandbox import SAFE_BUILTINS, SCAN_ATTRIBUTES
    scope = library_scope(['img0'])
    assert scope.builtins == frozenset(SAFE_BUILTINS) and scope.attributes == frozenset(SCAN_ATTRIBUTES)
    assert 'sum' not in scope.builtins
    assert not decoding_grammar.check_prefix('x = sum(', scope)
    assert not hasattr(decoding_grammar, 'DEFAULT_BUILTINS')
