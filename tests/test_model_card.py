"""MODEL_CARD.md's Reproduce section says how to get the same weights again."""

from __future__ import annotations

from vpcli.model_card import render


def _manifest(changes):
    return {'recipe': 'small', 'steps': 120, 'code_only_steps': 100, 'joint_steps': 20,
            'recipe_changes': changes, 'evaluation': {}, 'files': []}


def test_reproduce_is_a_fresh_run_when_the_recipe_never_changed():
    section = render(_manifest([])).split('## Reproduce')[1]
    assert 'voxelprompt train --recipe small -o runs/small --until 120 --export weights/' in section
    assert 'train-state' not in section


def test_reproduce_reexports_the_committed_state_after_recipe_changes():
    changes = [{'step': 40, 'changed': {'code_steps': [50, 100]}},
               {'step': 60, 'changed': {'model_text': [1, 2], 'unknown_metadata': [0.0, 0.25]}}]
    section = render(_manifest(changes)).split('## Reproduce')[1]
    assert 'is not the run behind these weights' in section
    assert '- at step 40: `code_steps` 50 → 100' in section
    assert '- at step 60: `model_text` 1 → 2; `unknown_metadata` 0.0 → 0.25' in section
    assert 'cp weights/train-state/small-checkpoint.pt runs/small/checkpoint.pt' in section


def test_the_card_does_not_import_the_evaluation_code():
    """weights -> model_card -> evaluate -> agent.prompt_run -> weights was an import circle
    (issue 20); the card takes its headlines as data."""
    import ast
    import inspect

    from vpcli import model_card
    imported = set()
    for node in ast.walk(ast.parse(inspect.getsource(model_card))):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
    assert not {name for name in imported if name.startswith(('vpcli.evaluate', 'vpcli.agent',
                                                              'vpcli.weights'))}, imported


def test_a_suite_whose_tasks_gave_no_value_is_not_met_not_unmeasured():
    """Most end-to-end tasks failed to produce a value: that is a failure with its count,
    not an absence of measurement (the card used to say 'not measured')."""
    from vpcli.model_card import _met
    failed = {'median_relative_volume_error': None, 'missing': 6, 'tasks': 9}
    assert _met('end-to-end', failed) == 'not met (6 of 9 tasks gave no value)'
    assert _met('end-to-end', {'median_relative_volume_error': 0.04, 'missing': 0}) == 'met'
    assert _met('end-to-end', {}) == 'not measured'
    from vpcli.evaluate import headline
    line = headline({'suite': 'end-to-end', 'metrics': failed})
    assert 'not met: 6 of 9 tasks gave no value' in line


def test_limitations_come_from_recorded_results_only():
    """No hand-typed figures: the card's limitations are the recorded suites whose target is
    not met and the task categories below 99 %, each with the command that measured it."""
    from vpcli.model_card import _limitations
    suites = {
        'anatomy': {'headline': 'anatomy: mean Dice 0.406 over 40 tasks', 'command': 'eval A',
                    'metrics': {'mean_dice': 0.406}},
        'lesions': {'headline': 'lesions: mean Dice 0.9', 'command': 'eval L',
                    'metrics': {'mean_dice': 0.9}},
        'prompts': {'headline': 'prompts: ...', 'command': 'eval P', 'metrics': {'accuracy': 0.995},
                    'per_category': {'volume': {'n': 59, 'accuracy': 1.0},
                                     'relative_volume': {'n': 59, 'accuracy': 0.983}}}}
    lines = _limitations(suites)
    assert lines[0] == ('- Not met, anatomy: mean Dice 0.406 over 40 tasks (target: mean Dice '
                        '>= 0.80; `eval A`).')
    assert not any('lesions' in line for line in lines)
    assert lines[-1] == '- Programs below 99 % exact on held-out prompts in: relative_volume 98.3 % of 59.'
    manifest = _manifest([])
    manifest['limitations'] = ['a hand-typed 99.6 %']
    assert 'hand-typed' not in render(manifest)


def test_the_real_suite_gets_a_status_and_a_per_structure_table():
    manifest = _manifest([])
    manifest['evaluation'] = {'suites': {'real': {
        'headline': 'real: deep grey 0.504', 'count': 1, 'command': 'voxelprompt eval --suite real',
        'metrics': {'deep_grey_dice': 0.504},
        'references': {'harvard_oxford': 'FSL Harvard-Oxford', 'aal': 'AAL'},
        'per_scan': {'mni152': {'deep_grey': {'left putamen': {
            'volume_ml': 10.55, 'harvard_oxford': {'dice': 0.413, 'reference_ml': 6.1}}}}}}}}
    card = render(manifest)
    assert '| real | 1 | deep grey 0.504 | deep grey Dice >= 0.70' in card and '| not met |' in card
    assert '| mni152 | left putamen | 10.55 | 0.413 | - |' in card


def test_averaged_weights_are_named_in_the_card():
    manifest = _manifest([])
    manifest['vision_config'] = {'label_ids': [2, 41], 'widths': [16], 'lesion_classes': []}
    manifest['vision_training'] = {'recipe': 'dense-cpu', 'steps': 8000, 'averaged_steps': [7100, 7700, 8000],
                                   'recipe_changes': [{'step': 10, 'changed': {'steps': [1, 2]}}]}
    card = render(manifest)
    assert 'average of the run\'s weights at steps 7100, 7700, 8000' in card
    assert 'as exported: averaged over steps 7100, 7700, 8000' in card
