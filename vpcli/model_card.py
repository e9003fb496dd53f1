"""``weights/MODEL_CARD.md``, written from the weights' manifest.

Every number in the card comes from the manifest: training facts from ``voxelprompt train
--export`` and evaluation results from ``voxelprompt eval --suite all --record`` (which
stores each suite's result with the command, machine and date it was measured on).
Rerunning that command reproduces the numbers (the suites are seeded).
"""

from __future__ import annotations

import datetime as dt
import os
import platform
from pathlib import Path

#: the targets of the training issue, per suite: (metric key, comparison, value, text)
TARGETS = {
    'prompts': ('accuracy', '>=', 0.99, 'exact program match >= 99 %'),
    'paraphrases': ('task_correct', '>=', 0.95, 'task-correct >= 95 %, over-refusal <= 1 %'),
    'anatomy': ('mean_dice', '>=', 0.80, 'mean Dice >= 0.80'),
    'lesions': ('mean_dice', '>=', 0.75, 'mean Dice >= 0.75'),
    'characterization': ('accuracy', '>=', 0.89, 'accuracy >= 89 % (paper 89.0 %)'),
    'end-to-end': ('median_relative_volume_error', '<=', 0.05, 'median relative volume error <= 5 %'),
    'consistency': ('median_spread', '<=', 0.03, 'volume spread <= 3 %'),
    'real': ('deep_grey_dice', '>=', 0.70, 'deep grey Dice >= 0.70 (white matter >= 0.90, brain >= 0.95)'),
}


def machine_description() -> str:
    """What the numbers were measured on (CPU count, processor, memory, GPU)."""
    import torch
    parts = [f'{os.cpu_count()} CPU cores']
    if platform.processor():
        parts.append(platform.processor())
    try:
        pages, size = os.sysconf('SC_PHYS_PAGES'), os.sysconf('SC_PAGE_SIZE')
        parts.append(f'{pages * size / 2 ** 30:.0f} GiB')
    except (ValueError, OSError, AttributeError):
        pass
    if torch.cuda.is_available():
        parts.append(torch.cuda.get_device_name(0))
    else:
        parts.append('no GPU')
    return ', '.join(parts) + f'; {platform.system()} {platform.machine()}, torch {torch.__version__}'


def evaluation_record(results: dict[str, dict], command: str,
                      headlines: dict[str, str]) -> dict:
    """The manifest's ``evaluation`` entry for a set of suite results.

    Args:
        results: Suite name -> result (``vpcli.evaluate.evaluate``).
        command: The command line that measured them.
        headlines: Suite name -> its one-line headline (``vpcli.evaluate.headline``; passed
            in so that this module does not import the evaluation code, which imports the
            weights loader, which writes this card).
    """
    record = {'command': command, 'machine': machine_description(),
              'date': dt.date.today().isoformat(), 'suites': {}}
    for suite, result in results.items():
        record['suites'][suite] = {
            'command': command, 'date': record['date'], 'machine': record['machine'],
            'headline': headlines[suite], 'metrics': result['metrics'], 'count': result['count'],
            'seed': result['seed'], 'device': result['device'], 'seconds': result['seconds'],
            'programs': result.get('programs', 'agent'),
            **{key: result[key] for key in ('per_category', 'per_target', 'per_class', 'per_prompt',
                                            'per_scan', 'references') if key in result}}
    return record


def _met(suite: str, metrics: dict) -> str:
    key, comparison, value, _ = TARGETS[suite]
    measured = metrics.get(key)
    if measured is None:
        if metrics.get('missing'):  # the tasks ran, but too many gave no value: a failure
            return f'not met ({metrics["missing"]} of {metrics.get("tasks")} tasks gave no value)'
        return 'not measured'
    ok = measured >= value if comparison == '>=' else measured <= value
    return 'met' if ok else 'not met'


def _threads(count) -> str:
    """``2 threads``, ``1 thread`` or ``default threads``."""
    return f'{count} thread' + ('' if count == 1 else 's') if count else 'default threads'


def _cpu_time(manifest: dict) -> str:
    """The process CPU time the run logged (all threads), where it logged it."""
    seconds, since = manifest.get('training_cpu_seconds'), manifest.get('cpu_seconds_since_step')
    if not seconds:
        return ''
    return (f'; {seconds / 3600:.2f} CPU-hours of process time (all threads) logged from step '
            f'{since} on')


def _refresh(manifest: dict) -> str:
    """The code refresh steps, where the run had one."""
    steps = manifest.get('refresh_steps')
    return f', {steps} code refresh (language model only, vision frozen, φ anchored)' if steps else ''


def _vision_lines(manifest: dict, vision: dict, settings: dict) -> list[str]:
    """What the vision network is and how it was trained (dense stage or joint episodes)."""
    spacing = (f'working-spacing floor {vision.get("min_spacing_mm")} mm (finer scans are seen '
               f'at that spacing; masks come back on the input grid)')
    dense = manifest.get('vision_training')
    if not vision.get('label_ids') or not dense:
        return [f'- Vision network: widths {vision.get("widths")}, ε width '
                f'{vision.get("embedding_width")}, {spacing}.',
                f'- Loss: token cross-entropy + {settings.get("dice_weight")} × soft Dice over '
                f'every segmentation a target program makes (docs/training.md).']
    recipe = dense.get('recipe_settings') or {}
    return [
        f'- Vision network: dense (docs/vision.md): widths {vision.get("widths")}, one softmax '
        f'over background and {len(vision["label_ids"])} labels plus '
        f'{len(vision.get("lesion_classes", []))} lesion-class channels; {spacing}. '
        f'`segment` returns the target the program names, assembled from those channels.',
        f'- Vision training: the dense stage, recipe `{dense.get("recipe")}` '
        f'(`{dense.get("recipe_file")}`): {dense.get("steps")} steps, {dense.get("samples")} '
        f'synthesised samples of {recipe.get("shape")} voxels at {recipe.get("spacing_mm")} mm, '
        f'{(dense.get("training_seconds") or 0) / 3600:.2f} hours on {dense.get("device")} '
        f'({100 * (dense.get("synthesis_share") or 0):.1f} % of it synthesis); loss: '
        f'cross-entropy + soft Dice over every label, soft Dice of every composite target, '
        f'lesion cross-entropy + soft Dice (docs/training.md).'
        + (f' The shipped weights are the average of the run\'s weights at steps '
           f'{", ".join(str(s) for s in dense["averaged_steps"])} '
           f'(`scripts/average_checkpoints.py`).' if dense.get('averaged_steps') else '')
        + (f' The lesion channels come from a convolutional lesion head of width '
           f'{recipe.get("lesion_head_width")} over the top features and the image, trained '
           f'alone with the trunk frozen from step {recipe.get("schedule_start")} to '
           f'{dense.get("steps")} (lesion voxels weighted {recipe.get("lesion_voxel_weight")} '
           f'in the cross-entropy; docs/vision.md "A lesion head of its own").'
           if recipe.get('train') == 'lesion_head' else ''),
        *_calibration_lines(dense.get('volume_calibration')),
        *(['- Flip averaging (run time, docs/vision.md): each scan is also segmented '
           'mirrored left-right, and the two probability maps are averaged, left and right '
           'labels swapped back.'] if vision.get('flip_averaging') else []),
        *([f'- Working grid (run time, docs/vision.md "Thick slices"): every scan is '
           f'resampled onto a {vision.get("min_spacing_mm", 0):g} mm grid on every axis (the '
           f'grid the dense stage trains on; thick slices are interpolated, not kept) and '
           f'the masks are resampled back onto its own grid.']
          if vision.get('isotropic_working_grid') and vision.get('min_spacing_mm') else []),
        *(['- Intensity refinement (run time, docs/vision.md): the label probabilities, '
           'resampled to the scan\'s own grid, are a prior combined with one Gaussian of '
           'intensity per label fitted to the scan by expectation-maximisation'
           + ('; along the brain\'s edge the background competes with a two-Gaussian '
              'intensity mixture of its own, so the brain ends where the scan shows it.'
              if vision.get('edge_refinement') else '; the background never moves.')
           + (f' A scan no finer than the working grid is refined on a '
              f'{vision["refinement_spacing_mm"]:g} mm grid interpolated from it and the '
              f'result averaged back onto its own grid.'
              if vision.get('refinement_spacing_mm') else '')]
          if vision.get('intensity_refinement') else []),
        '- Language model training: token cross-entropy on target programs '
        '(docs/training.md); the joint stage\'s vision network was replaced by the dense one.']


def _calibration_lines(record: dict | None) -> list[str]:
    """The volume calibration fitted at export (vpcli.vision.calibration), if any."""
    if not record:
        return []
    without, with_ = record.get('without', {}), record.get('with', {})
    return [f'- Volume calibration: one logit offset per label, fitted at export on '
            f'{record.get("fitted_on")} so that thresholded volumes match true volumes '
            f'(docs/vision.md). On {record.get("held_out")} held out from the fit, over '
            f'{with_.get("labels")} labels: median mask / true volume '
            f'{without.get("median_volume_ratio")} → {with_.get("median_volume_ratio")}, '
            f'median |log ratio| {without.get("median_abs_log_ratio")} → '
            f'{with_.get("median_abs_log_ratio")}, mean Dice {without.get("mean_dice")} → '
            f'{with_.get("mean_dice")}.']


def render(manifest: dict) -> str:
    """The model card text."""
    settings = manifest.get('recipe_settings') or {}
    agent, vision = manifest.get('agent_config', {}), manifest.get('vision_config', {})
    evaluation = manifest.get('evaluation') or {}
    suites = evaluation.get('suites', {})
    hours = (manifest.get('training_seconds') or 0) / 3600
    lines = [
        '# Model card: voxelprompt shipped weights',
        '',
        'Generated from `weights/manifest.json` by `voxelprompt eval --suite all --record` '
        '(`vpcli/model_card.py`); do not edit by hand.',
        '',
        '## What these weights are',
        '',
        f'- Recipe `{manifest.get("recipe")}` (`{manifest.get("recipe_file") or "recipes/train/" + str(manifest.get("recipe")) + ".toml"}`): '
        f'{manifest.get("steps")} optimizer steps, of which {manifest.get("code_only_steps")} code-only{_refresh(manifest)} and '
        f'{manifest.get("joint_steps")} joint; {hours:.2f} hours of training time logged '
        f'(CPU, {_threads(settings.get("threads"))}){_cpu_time(manifest)}.',
        f'- Language model: LLaMA architecture, random init, d={agent.get("hidden_size")}, '
        f'{agent.get("layers")} layers, {agent.get("heads")} heads, MLP {agent.get("mlp_size")}, '
        f'{manifest.get("tokenizer_pieces")} SentencePiece pieces; φ head Linear→SiLU (32).',
        *_vision_lines(manifest, vision, settings),
        '',
        '## Trained on',
        '',
    ]
    for source in manifest.get('data_sources', []):
        lines.append(f'- {source["name"]} (`{source["package"]}`): {source["use"]}; '
                     f'licence: {source["licence"]}.')
    lines += [
        '- Synthetic scans only (domain randomisation: deformations, flips, per-label '
        'intensities for T1w/T2w/FLAIR/PD/GRE/DWI/ADC/CT-like contrasts, bias, noise, blur, '
        'clinical geometries at the low training resolution) with synthetic lesions '
        '(docs/synthesis.md). No real patient scan was used.',
        '',
        '## Measured numbers',
        '',
    ]
    if not suites:
        lines += ['Not evaluated yet: run `voxelprompt eval --suite all --record`.', '']
    else:
        commands = list(dict.fromkeys(entry.get('command', evaluation.get('command'))
                                      for entry in suites.values()))
        places = list(dict.fromkeys(f'{entry.get("date", evaluation.get("date"))} on '
                                    f'{entry.get("machine", evaluation.get("machine"))}'
                                    for entry in suites.values()))
        lines += [f'Measured {"; ".join(places)}.',
                  'Command' + ('s' if len(commands) > 1 else '') + ': '
                  + ', '.join(f'`{c}`' for c in commands), '',
                  '| suite | tasks | result | target | status |', '|---|---|---|---|---|']
        for suite, entry in suites.items():
            target = TARGETS.get(suite)
            lines.append(f'| {suite} | {entry["count"]}{" per category" if suite == "prompts" else ""} '
                         f'| {entry["headline"].split(": ", 1)[-1]} | {target[3] if target else ""} '
                         f'| {_met(suite, entry["metrics"]) if target else ""} |')
        lines.append('')
        prompts = suites.get('prompts')
        if prompts and prompts.get('per_category'):
            lines += ['Program accuracy per task category (held-out prompts):', '',
                      '| category | n | exact | equivalent |', '|---|---|---|---|']
            for category, entry in prompts['per_category'].items():
                lines.append(f'| {category} | {entry["n"]} | {_pct(entry["accuracy"])} | '
                             f'{_pct(entry["equivalent_accuracy"])} |')
            lines.append('')
    real = suites.get('real')
    if real and real.get('per_scan'):
        atlases = list(real.get('references') or {})
        lines += ['Deep grey and large structures on real scans (`voxelprompt eval --suite real`): our '
                  'volume and Dice against each reference atlas, drawn to its own protocol '
                  '(' + '; '.join(f'{k}: {v}' for k, v in (real.get('references') or {}).items())
                  + '):', '',
                  '| scan | structure | mL | ' + ' | '.join(atlases) + ' |',
                  '|---|---|---|' + '---|' * len(atlases)]
        for scan, entry in real['per_scan'].items():
            for structure, row in {**entry.get('deep_grey', {}), **entry.get('large', {})}.items():
                cells = [f'{row[a]["dice"]:.3f}' if a in row else '-' for a in atlases]
                lines.append(f'| {scan} | {structure} | {row["volume_ml"]:.2f} | '
                             + ' | '.join(cells) + ' |')
        lines.append('')
    lines += [
        '## What it can and cannot do',
        '',
        '- It writes programs in the library\'s language for the 17 task categories of the '
        'VoxelPrompt task table, and refuses prompts outside them (a rule-based gate for host '
        'access, prompt injection, non-brain anatomy and prompts that name nothing of the brain '
        'or its imaging, then the model). How often it writes '
        'the right program is the `prompts` row above.',
        '- Its masks come from a small vision network trained on CPU for the hours above; the '
        'Dice rows say how good they are on held-out synthetic subjects. Where a target is '
        'not met, do not use the masks or the measurements derived from them for research '
        'without checking them (the QC pictures in every output folder are for that).',
        '- It has never seen a real scan in training; real scans differ from the synthetic '
        'world. The `real` and `example` rows and the golden test in `tests/test_golden.py` '
        'measure it on real templates (MNI ICBM152 2009, FSL MNI152, MNI305) against '
        'references drawn by others.',
        '- Every mask in an output folder carries quality-control flags (`metrics.json` '
        '`warnings`, docs/qc.md); `--strict-qc` turns them into exit code 7.',
        *_limitations(suites),
        '- It does not diagnose, and nothing it says is a clinical finding.',
        '',
        '## Reproduce',
        '',
        *_reproduce(manifest),
    ]
    return '\n'.join(lines)


def _limitations(suites: dict) -> list[str]:
    """Limitations generated from the recorded results (no hand-typed figure): every suite
    whose target is not met, and every task category whose programs fall short of 99 %."""
    lines = []
    for suite, entry in suites.items():
        target = TARGETS.get(suite)
        if target and _met(suite, entry['metrics']).startswith('not met'):
            lines.append(f'- Not met, {suite}: {entry["headline"].split(": ", 1)[-1]} '
                         f'(target: {target[3]}; `{entry.get("command", "")}`).')
    prompts = suites.get('prompts') or {}
    short = [(category, e) for category, e in (prompts.get('per_category') or {}).items()
             if e.get('accuracy') is not None and e['accuracy'] < TARGETS['prompts'][2]]
    if short:
        lines.append('- Programs below 99 % exact on held-out prompts in: ' + ', '.join(
            f'{category} {_pct(e["accuracy"])} of {e["n"]}' for category, e in short) + '.')
    return lines


def _reproduce(manifest: dict) -> list[str]:
    """How to get these weights again: a fresh run of the recipe, or, when the run changed
    its recipe on the way, a re-export of the committed training state."""
    recipe, steps = manifest.get('recipe'), manifest.get('steps')
    changes = manifest.get('recipe_changes') or []
    lines, start = [], []
    if changes:
        lines = ['The run changed its recipe on the way (`voxelprompt train --change-recipe`), '
                 f'so a fresh run of today\'s `{recipe}` recipe is not the run behind these '
                 'weights:', '']
        for change in changes:
            what = '; '.join(f'`{key}` {old} → {new}' for key, (old, new) in change['changed'].items())
            lines.append(f'- at step {change["step"]}: {what}')
        lines += ['', 'The exact weights are re-exported from the run\'s committed state '
                  '(`weights/train-state/`), which also continues the run exactly:', '']
        start = [f'mkdir -p runs/{recipe} && cp weights/train-state/{recipe}-checkpoint.pt '
                 f'runs/{recipe}/checkpoint.pt']
    lines += ['```bash', *start,
              f'voxelprompt train --recipe {recipe} -o runs/{recipe} --until {steps} --export weights/',
              'voxelprompt eval --suite all --record', '```', '']
    if not changes:
        lines.append('Training resumes exactly from `runs/NAME/checkpoint.pt`, so the steps may be '
                     'done in pieces; the evaluation suites are seeded.')
    else:
        lines.append('The evaluation suites are seeded.')
    if manifest.get('averaged_steps'):
        lines += ['', 'The language model is the mean of the run\'s language models at steps '
                  + ', '.join(f'{s:,}' for s in manifest['averaged_steps'])
                  + ' (`scripts/average_checkpoints.py`); the committed state holds that mean.']
    dense = manifest.get('vision_training')
    if dense:
        name = dense.get('recipe')
        lines += ['', f'The vision network comes from the dense stage (`{name}`, '
                  f'{dense.get("steps")} steps), exported into the folder of the language model:', '',
                  '```bash', f'voxelprompt train --recipe {name} -o runs/{name} --until '
                  f'{dense.get("steps")} --export weights/', '```', '']
        for change in dense.get('recipe_changes') or []:
            what = '; '.join(f'{key}: {old} → {new}' for key, (old, new) in change['changed'].items())
            lines.append(f'- changed at step {change["step"]}: {what}')
        if dense.get('recipe_changes'):
            lines += ['', 'A fresh run of today\'s recipe has the later settings from its start, so '
                      'it is not the same run; `weights/train-state/' + f'{name}-checkpoint.pt` '
                      'holds the run\'s weights at its last step (fp16, no optimizer moments)'
                      + (', as exported: averaged over steps '
                         + ', '.join(str(s) for s in dense['averaged_steps'])
                         if dense.get('averaged_steps') else '') + '.']
    return lines + ['']


def _pct(value) -> str:
    return 'n/a' if value is None else f'{100 * value:.1f} %'


def write(folder: Path) -> Path:
    """Render the card of a weights folder from its manifest (atomically)."""
    import json

    from vpcli.volumes import write_text_atomic
    manifest = json.loads((Path(folder) / 'manifest.json').read_text())
    path = Path(folder) / 'MODEL_CARD.md'
    write_text_atomic(path, render(manifest))
    return path
