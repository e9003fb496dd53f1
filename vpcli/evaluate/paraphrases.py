"""The ``paraphrases`` evaluation suite: prompts as people write them.

Tasks of every category are written on described cases with prompts from the held-out
paraphrase families (:mod:`vpcli.tasks.paraphrase`, ``split = "eval"``: whole families
never trained on), with typing noise, shorthand target names and several sentences. The
agent writes a program for each (gate on, dry executor: no scans are read).

A task is **correct** when the written program computes what the target program k*
computes: every mask (each ``segment`` call: masks are written), ``output``, ``answer`` and
``save`` has the same derivation from the same
scans (:func:`result_signature`: the same functions on the same targets, scans, axes and
units, whatever the variable names, output names, step layout or statement order). Two
programs with one signature give the same results on every scan, so this scores the
task's result, not the program's text. Exact text match is reported beside it.

Over-refusal is the share of these in-scope prompts refused (by the gate or the model);
under-refusal is measured by the refusal suite of ``--suite prompts``. The held-out
families are mostly sentences, so the suite also runs :data:`PLAIN_COMMANDS`, 40 short
commands a first-time user types ("segment the hippocampus"), and counts those whose
program segments the expected target with the expected measurement (``plain_correct``)
and those refused or left without a program (``plain_refused``).
"""

from __future__ import annotations

import ast
import re
from collections import Counter
from typing import Callable, Sequence

from vpcli.evaluate.common import _fraction, _normalise, _rng
from vpcli.evaluate.prompts import _dry_run

#: short in-scope commands (the quick start's among them) -> what their program must compute:
#: the target segmented and the library calls beside ``encode``, ``segment``, ``output``
#: and ``save`` (bare "the lateral ventricle" is both sides, as in the task world; a skull
#: strip keeps the intracranial volume)
PLAIN_COMMANDS = {
    'segment the lateral ventricles': ('bilateral lateral ventricle', ()),
    'segment the left hippocampus': ('left hippocampus', ()),
    'segment the hippocampus': ('bilateral hippocampus', ()),
    'segment the thalamus': ('bilateral thalamus', ()),
    'segment the ventricles': ('ventricular system', ()),
    'segment the cerebellum': ('bilateral cerebellum', ()),
    'segment the brainstem': ('brainstem', ()),
    'segment the putamen': ('bilateral putamen', ()),
    'segment the caudate': ('bilateral caudate', ()),
    'segment the amygdala': ('bilateral amygdala', ()),
    'segment the corpus callosum': ('corpus callosum', ()),
    'segment the third ventricle': ('third ventricle', ()),
    'segment the fourth ventricle': ('fourth ventricle', ()),
    'segment the lesions': ('all lesions', ()),
    'segment the white matter hyperintensities': ('all white matter hyperintensities', ()),
    'segment the right lateral ventricle': ('right lateral ventricle', ()),
    'segment the left lateral ventricle': ('left lateral ventricle', ()),
    'segment the cortex': ('bilateral cerebral cortex', ()),
    'segment the frontal lobe': ('bilateral frontal lobe', ()),
    'what is the volume of the lateral ventricles?': ('bilateral lateral ventricle', ('volume',)),
    'what is the volume of the left hippocampus?': ('left hippocampus', ('volume',)),
    'volume of the ventricles': ('ventricular system', ('volume',)),
    'how big are the lateral ventricles?': ('bilateral lateral ventricle', ('volume',)),
    'segment the CSF': ('extraventricular CSF', ()),
    'segment the choroid plexus': ('bilateral choroid plexus', ()),
    'skull strip the image': ('intracranial volume', ('extract',)),
    'remove the skull': ('intracranial volume', ('extract',)),
    'segment the intracranial volume': ('intracranial volume', ()),
    'segment the basal ganglia': ('bilateral basal ganglia', ()),
    'segment the pallidum': ('bilateral pallidum', ()),
    'segment the left lateral ventricles': ('left lateral ventricle', ()),
    'segment lateral ventricles': ('bilateral lateral ventricle', ()),
    'lateral ventricles': ('bilateral lateral ventricle', ()),
    'segment the lateral ventricle': ('bilateral lateral ventricle', ()),
    'measure the hippocampal volume': ('bilateral hippocampus', ('volume',)),
    'crop to the brain': ('whole brain', ('crop',)),
    'what is the total brain volume?': ('whole brain', ('volume',)),
    'segment the grey matter': ('bilateral grey matter', ()),
    'segment the white matter': ('bilateral cerebral white matter', ()),
    'segment the brain': ('whole brain', ()),
}
#: the one scan the plain commands are asked of
PLAIN_SCAN_LINES = ('img0: T1w, date unknown, session 01',)


def plain_command_failures(agent_or_bundle, seed: int = 0) -> list[dict]:
    """The :data:`PLAIN_COMMANDS` that the gate or the model refuses, that get no program,
    or whose program computes something else (dry run: no scans are read).

    Returns:
        One dict per failure: ``prompt``, ``miss`` (``refused``, ``no program`` or
        ``wrong``) and ``why`` (the refusal reason, or the program written).
    """
    from vpcli.agent.prompt_run import dry_run
    agent = getattr(agent_or_bundle, 'agent', agent_or_bundle)
    failures = []
    for prompt, (target, functions) in PLAIN_COMMANDS.items():
        record, problem, status = dry_run(agent, prompt, list(PLAIN_SCAN_LINES), seed)
        if status != 'ok' or record.refused:
            failures.append({'prompt': prompt, 'miss': 'refused',
                             'why': problem if status != 'ok' else record.refusal_reason})
        elif not record.steps:
            failures.append({'prompt': prompt, 'miss': 'no program', 'why': ''})
        elif _plain_summary([s.model_text for s in record.steps]) != (target, tuple(sorted(functions))):
            failures.append({'prompt': prompt, 'miss': 'wrong', 'why': record.model_program()})
    return failures


def _plain_summary(steps: Sequence[str]) -> tuple[str | None, tuple[str, ...]]:
    """A one-target program's target and its other library calls (sorted)."""
    from vpcli.agent.tokenizer import MOD
    code = '\n'.join(step.replace(MOD, '') for step in steps)
    targets = re.findall(r"segment\(\w+, ['\"]([^'\"]+)['\"]", code)
    calls = re.findall(r'\b([a-z_]+)\(', code)
    others = tuple(sorted({c for c in calls if c not in ('encode', 'segment', 'output', 'save', 'answer')}))
    return (targets[0] if len(set(targets)) == 1 else None), others


#: the calls whose arguments are a program's results
SINKS = {'output': (1, 2), 'answer': (0,), 'save': (0,)}


def _canonical(node: ast.AST, env: dict[str, str]) -> str:
    """A node's text with every variable replaced by what it was computed from (``phi``
    keywords dropped: they carry the model's conditioning, not what is computed)."""
    if isinstance(node, ast.Name):
        return env.get(node.id, node.id)
    if isinstance(node, ast.Constant):
        return repr(node.value)
    if isinstance(node, ast.Call):
        name = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
        args = [_canonical(a, env) for a in node.args]
        args += [f'{k.arg}={_canonical(k.value, env)}' for k in node.keywords if k.arg != 'phi']
        return f'{name}({", ".join(args)})'
    if isinstance(node, ast.Subscript):
        return f'{_canonical(node.value, env)}[{_canonical(node.slice, env)}]'
    if isinstance(node, ast.BinOp):
        return f'({_canonical(node.left, env)} {type(node.op).__name__} {_canonical(node.right, env)})'
    if isinstance(node, ast.UnaryOp):
        return f'({type(node.op).__name__} {_canonical(node.operand, env)})'
    if isinstance(node, (ast.Tuple, ast.List)):
        return '(' + ', '.join(_canonical(e, env) for e in node.elts) + ')'
    return ast.dump(node)


def _is_call(node: ast.AST, name: str) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == name


def result_signature(steps: Sequence[str]) -> tuple[str, ...] | None:
    """The derivations of a program's results (masks, outputs, answers, saved images),
    sorted (None: it does not parse).

    Args:
        steps: Model-text steps (``<MOD>`` markers allowed).
    """
    from vpcli.agent.tokenizer import MOD
    code = '\n'.join(step.replace(MOD, '') for step in steps)
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return None
    env: dict[str, str] = {}
    results = []
    for statement in tree.body:
        if isinstance(statement, (ast.Assign, ast.Expr)) and _is_call(statement.value, 'segment'):
            results.append('mask: ' + _canonical(statement.value, env))  # every mask is written
        if isinstance(statement, ast.Assign) and len(statement.targets) == 1:
            target = statement.targets[0]
            if isinstance(target, ast.Name):
                env[target.id] = _canonical(statement.value, env)
            elif isinstance(target, (ast.Tuple, ast.List)):
                value = _canonical(statement.value, env)
                for index, element in enumerate(target.elts):
                    if isinstance(element, ast.Name):
                        env[element.id] = f'{value}[{index}]'
        elif isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Call) \
                and isinstance(statement.value.func, ast.Name) and statement.value.func.id in SINKS:
            call = statement.value
            kept = [_canonical(call.args[i], env) for i in SINKS[call.func.id] if i < len(call.args)]
            results.append(f'{call.func.id}: ' + ' | '.join(kept))
    return tuple(sorted(results))


def diagnose(written: Sequence[str], target: Sequence[str]) -> str:
    """Why two signatures differ, coarsest first: ``measurement`` (other functions or
    results: the wrong task), ``target`` (other segmented targets), ``scan`` (other
    images), else ``other`` (arguments such as an axis or a unit)."""
    def segments(signature):
        return Counter(re.findall(r"segment\(\w+\([^()]*\), ('[^']*')\)", ' '.join(signature)))

    def scans(signature):
        return Counter(re.findall(r'\bimg\d+\b', ' '.join(signature)))

    def functions(signature):
        return Counter(re.findall(r'\b([a-z_]+)\(', ' '.join(signature))) + Counter(
            entry.split(':', 1)[0] for entry in signature)
    if functions(written) != functions(target) or len(written) != len(target):
        return 'measurement'
    if segments(written) != segments(target):
        return 'target'
    if scans(written) != scans(target):
        return 'scan'
    return 'other'


def paraphrases_suite(bundle, count: int = 20, seed: int = 0,
                      progress: Callable[[str], None] = lambda line: None) -> dict:
    """Run ``count`` held-out paraphrase tasks per category (see the module docstring).

    Returns:
        ``metrics`` (``task_correct``, ``over_refusal``, ``exact``, counts of each kind of
        miss), ``per_category`` and up to 40 ``examples`` of misses.
    """
    from vpcli.agent.corpus import task_episode
    from vpcli.agent.refusal import MODEL_REFUSAL
    from vpcli.tasks.described import draw_described
    from vpcli.tasks.templates import CATEGORIES

    per_category, examples = {}, []
    totals = Counter()
    for index, category in enumerate(CATEGORIES):
        rng = _rng('paraphrases', seed, index)
        counts = Counter()
        for _ in range(count):
            draft, case = draw_described(rng, category, 'eval', paraphrased=True)
            episode = task_episode(draft, case, rng)
            counts['n'] += 1
            record, problem, status = _dry_run(bundle, episode.prompt, episode.scan_lines, seed)
            miss = None
            if status != 'ok':
                miss, detail = 'rejected' if status == 'rejected' else 'error', problem
            elif record.refused:
                miss, detail = 'refused', record.refusal_reason
                counts['refused_by_model' if detail == MODEL_REFUSAL else 'refused_by_gate'] += 1
            else:
                written = [s.model_text for s in record.steps]
                mine, theirs = result_signature(written), result_signature(episode.steps)
                counts['exact'] += _normalise('\n'.join(written)) == _normalise('\n'.join(episode.steps))
                if mine is not None and mine and mine == theirs:
                    counts['correct'] += 1
                else:
                    miss = diagnose(mine or (), theirs or ())
                    detail = record.model_program()
            if miss is not None:
                counts[miss] += 1
                if len(examples) < 40:
                    examples.append({'category': category, 'prompt': episode.prompt, 'miss': miss,
                                     'detail': detail, 'target': '\n'.join(episode.steps)})
        entry = {key: counts[key] for key in ('n', 'correct', 'exact', 'refused', 'target', 'scan',
                                              'measurement', 'other', 'rejected', 'error')}
        entry['task_correct'] = _fraction(counts['correct'], counts['n'])
        entry['over_refusal'] = _fraction(counts['refused'], counts['n'])
        per_category[category] = entry
        totals.update(counts)
        progress(f'paraphrases: {category}: {counts["correct"]}/{counts["n"]} correct, '
                 f'{counts["refused"]} refused')
    metrics = {'task_correct': _fraction(totals['correct'], totals['n']),
               'over_refusal': _fraction(totals['refused'], totals['n']),
               'exact': _fraction(totals['exact'], totals['n']), 'prompts': totals['n'],
               'refused_by_gate': totals['refused_by_gate'],
               'refused_by_model': totals['refused_by_model'],
               **{f'missed_{key}': totals[key] for key in ('refused', 'target', 'scan', 'measurement',
                                                          'other', 'rejected', 'error')}}
    plain = plain_command_failures(bundle, seed)
    refused = sum(f['miss'] != 'wrong' for f in plain)
    metrics.update(plain_commands=len(PLAIN_COMMANDS), plain_refused=refused,
                   plain_correct=len(PLAIN_COMMANDS) - len(plain))
    progress(f'paraphrases: plain commands: {len(PLAIN_COMMANDS) - len(plain)} of {len(PLAIN_COMMANDS)} '
             f'right, {refused} refused or without a program')
    return {'suite': 'paraphrases', 'count': count, 'seed': seed, 'metrics': metrics,
            'per_category': per_category, 'examples': examples, 'plain_failures': plain}


def headline(result: dict) -> str:
    """The suite's one-line headline."""
    m = result['metrics']

    def percent(value):
        return 'n/a' if value is None else f'{100 * value:.1f} %'
    return (f'paraphrases: task-correct {percent(m["task_correct"])} of {m["prompts"]} held-out '
            f'paraphrases (target >= 95 %), over-refusal {percent(m["over_refusal"])} (target <= 1 %; '
            f'{m.get("refused_by_gate", 0)} by the gate, {m.get("refused_by_model", 0)} by the model); '
            f'exact program text {percent(m["exact"])}'
            + (f'; plain commands: {m["plain_correct"]} of {m["plain_commands"]} right, '
               f'{m["plain_refused"]} refused or without a program' if 'plain_correct' in m else ''))


def format_rows(result: dict) -> list[list]:
    """Table rows per category."""
    rows = []
    for category, e in result['per_category'].items():
        rows.append([category, e['n'], e['correct'], e['refused'], e['target'], e['scan'],
                     e['measurement'], e['other'] + e['rejected'] + e['error']])
    m = result['metrics']
    rows.append(['all', m['prompts'], round((m['task_correct'] or 0) * m['prompts']),
                 m['missed_refused'], m['missed_target'], m['missed_scan'], m['missed_measurement'],
                 m['missed_other'] + m['missed_rejected'] + m['missed_error']])
    return rows


ROW_HEADER = ['category', 'n', 'correct', 'refused', 'wrong target', 'wrong scan',
              'wrong measurement', 'other']

