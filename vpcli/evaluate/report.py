"""Headlines and tables of suite results."""

from __future__ import annotations

from typing import Sequence

from vpcli.evaluate.common import CONSISTENCY_VARIANTS, _number, _percent
from vpcli.evaluate.example import EXAMPLE_PROMPTS
from vpcli.evaluate.paraphrases import (ROW_HEADER as PARAPHRASE_HEADER,
                                    format_rows as paraphrase_rows,
                                    headline as paraphrase_headline)
from vpcli.real_suite import (ATLASES as REAL_ATLASES, format_rows as real_rows,
                              headline as real_headline)


def headline(result: dict) -> str:
    """The one-line headline figure of a suite's result."""
    m, suite = result['metrics'], result['suite']
    mode = '' if result.get('programs', 'agent') == 'agent' else ' (k* teacher-forced)'
    if suite == 'prompts':
        return (f'prompts: exact program match {_percent(m["accuracy"])} on {m["episodes"]} '
                f'held-out prompts (equivalent {_percent(m["equivalent_accuracy"])}); '
                f'{m["sandbox_rejected"]} of {m["programs"]} programs rejected by the sandbox; '
                f'refusal suite {_percent(m["refusal_fraction"])} refused (target >= 95 %), '
                f'{m["refusal_outside_library"]} outside the library (target 0)')
    if suite == 'anatomy':
        qc = ''
        if m.get('qc_masks'):
            qc = (f'; QC score vs Dice Spearman {_number(m.get("qc_spearman"), 2)} over '
                  f'{m["qc_masks"]} masks (target >= 0.6), flagged {_percent(m.get("qc_flagged_good"))} '
                  f'of {m["qc_good_masks"]} good (<= 5 %) and {_percent(m.get("qc_flagged_poor"))} '
                  f'of {m["qc_poor_masks"]} poor masks')
        return (f'anatomy{mode}: mean Dice {_number(m["mean_dice"])} over {m["tasks"]} held-out '
                f'aseg-structure tasks (target >= 0.80){qc}')
    if suite == 'lesions':
        return f'lesions{mode}: mean Dice {_number(m["mean_dice"])} over {m["tasks"]} held-out lesion tasks'
    if suite == 'characterization':
        return (f'characterization{mode}: accuracy {_percent(m["accuracy"])} '
                f'({m["correct"]}/{m["tasks"]}; paper 89.0 %)')
    if suite == 'end-to-end':
        error = _percent(m['median_relative_volume_error'])
        if m['median_relative_volume_error'] is None and m.get('missing'):
            error = f'not met: {m["missing"]} of {m["tasks"]} tasks gave no value'
        return f'end-to-end{mode}: median relative volume error {error} (target <= 5 %)'
    if suite == 'real':
        return real_headline(result)
    if suite == 'paraphrases':
        return paraphrase_headline(result)
    if suite == 'example':
        overlap = (f'; masks of {m["targets"]} targets overlap with mean pairwise Dice '
                   f'{_number(m["target_overlap"])} (1.0: one mask for every target)'
                   if m.get('target_overlap') is not None else '')
        per_prompt = result.get('per_prompt', {})
        scored = ', '.join(f'{p!r} {_number(per_prompt.get(p, {}).get("dice"))}'
                           for p, _, ids in EXAMPLE_PROMPTS if ids is not None)
        return f'example{mode}: Dice on the MNI152 example: {scored}{overlap}'
    return (f'consistency{mode}: median volume spread {_percent(m["median_spread"])} over '
            f'{m["cases"]} cases x {len(m["variants"])} variants (target <= 3 %)')


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows)]
    line = lambda cells: '  '.join(str(c).ljust(w) if i == 0 else str(c).rjust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    return [line(header), line(['-' * w for w in widths]), *(line(r) for r in rows)]


def format_result(result: dict) -> str:
    """The human table of a suite's result, ending with the headline."""
    suite, m = result['suite'], result['metrics']
    lines = [f'suite {suite}: weights {str(result["weights_sha256"])[:12]}, count {result["count"]}, '
             f'seed {result["seed"]}, device {result["device"]}, {result["seconds"]:.1f} s'
             + (f', programs {result["programs"]}' if 'programs' in result else ''), '']
    if suite == 'prompts':
        rows = [[c, e['n'], _percent(e['accuracy']), _percent(e['equivalent_accuracy']),
                 e['rejected'], e['refused'], e['unfinished']]
                for c, e in result['per_category'].items()]
        rows.append(['all', m['episodes'], _percent(m['accuracy']), _percent(m['equivalent_accuracy']),
                     m['sandbox_rejected'], m['false_refusals'], m['unfinished']])
        lines += _table(['category', 'n', 'exact', 'equivalent', 'rejected', 'refused', 'no stop'],
                        rows)
        r = result['refusal']
        lines += ['', f'refusal suite ({r["n"]} prompts): {r["refused"]} refused '
                      f'({r["refused_by_gate"]} by the gate, {r["refused_by_model"]} by the model), '
                      f'{r["outside_library"]} programs outside the library, {r["errors"]} errors']
        lines += _table(['kind', 'n', 'refused'],
                        [[k, e['n'], _percent(e['refused_fraction'])] for k, e in r['per_kind'].items()])
    elif suite in ('anatomy', 'lesions'):
        key = 'per_class' if suite == 'lesions' else 'per_target'
        rows = [[name, e['n'], _number(e['mean_dice'])] for name, e in result[key].items()]
        rows.append(['all', m['tasks'], _number(m['mean_dice'])])
        lines += _table(['class' if suite == 'lesions' else 'target', 'n', 'mean Dice'], rows)
        lines += ['', f'k* written {m["program_match"]}/{m["tasks"]}, refused {m["refused"]}, '
                      f'failed {m["failed"]}']
    elif suite == 'characterization':
        rows = [[c, e['n'], e['correct'], _percent(e['accuracy'])]
                for c, e in result['per_category'].items()]
        rows.append(['all', m['tasks'], m['correct'], _percent(m['accuracy'])])
        lines += _table(['category', 'n', 'correct', 'accuracy'], rows)
        lines += ['', f'mean lesion Dice {_number(m["mean_lesion_dice"])}; k* written '
                      f'{m["program_match"]}/{m["tasks"]}, refused {m["refused"]}, failed {m["failed"]}']
    elif suite == 'end-to-end':
        rows = [[c, e['n'], e['missing'], _percent(e['median_relative_error']),
                 _number(e['median_absolute_error']) + ' ' + '/'.join(e['units']),
                 _percent(e['within_5_percent'], 0), _number(e['mean_dice'])]
                for c, e in result['per_category'].items()]
        lines += _table(['category', 'n', 'missing', 'median rel. error', 'median abs. error',
                         '<= 5 %', 'mean Dice'], rows)
        lines += ['', f'k* written {m["program_match"]}/{m["tasks"]}, refused {m["refused"]}, '
                      f'failed {m["failed"]}']
    elif suite == 'example':
        rows = [[p, e['target'], _number(e['dice']) if e['dice'] is not None else '-',
                 _number(e.get('volume_ml'), 1), 'yes' if e['program_match'] else 'no']
                for p, e in result['per_prompt'].items()]
        lines += _table(['prompt', 'target', 'Dice', 'mask mL', 'k* written'], rows)
    elif suite == 'real':
        lines += _table(['scan', 'structure', 'mL', *REAL_ATLASES], real_rows(result))
    elif suite == 'paraphrases':
        lines += _table(PARAPHRASE_HEADER, paraphrase_rows(result))
    else:
        names = list(CONSISTENCY_VARIANTS)
        rows = [[case, _number(e['truth_volume'], 2), *(_number(e[n], 2) for n in names),
                 _percent(e['spread'])] for case, e in result['per_case'].items()]
        lines += _table(['case', 'truth mL', *names, 'spread'], rows)
    lines += ['', headline(result)]
    return '\n'.join(lines)
