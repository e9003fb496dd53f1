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
    """weights -> model_card -> evaluate -> agent.run -> weights was an import circle (issue 20);
    the card takes its headlines as data."""
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
