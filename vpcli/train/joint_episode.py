"""The teacher-forced episode of a joint step: the task's target program runs step by step
in the real sandbox with the live vision network on its synthesised case, φ taken from the
language model at each step's ``<MOD>`` positions, so every ``segment`` is a differentiable
segmentation scored by soft Dice (:class:`vpcli.train.losses.TrainingVision`); plus the
extra targets scored on the episode's first encoding (paper App. B.2)."""

from __future__ import annotations

import torch

from vpcli.errors import VoxelPromptError
from vpcli.train.losses import TrainingVision, summed_ce


def joint_episode_loss(agent, vision, tokenizer, special: dict[str, int], draft, world,
                       extras=(), lines=None, device: str = 'cpu') \
        -> tuple[torch.Tensor, int, TrainingVision]:
    """Teacher-forced episode of ``draft`` on its synthesised case: summed CE, tokens,
    and the vision scorer (holding the Dice losses). ``extras`` are (prompt, target)
    pairs scored on the episode's first encoding (:func:`score_extra_targets`); ``lines``
    the state's scan lines (default: the case's scans described). ``special``: the ids of
    the tokenizer's special tokens, by name."""
    from vpcli.agent.decoding_grammar import PHI_NAME
    from vpcli.agent.loop import MAX_FEEDBACK_TOKENS, read_feedback
    from vpcli.agent.model_text import split_steps, to_executable, to_model_text
    from vpcli.agent.tokenizer import (CODE_START, EMBEDDING, FEEDBACK_END, FEEDBACK_START,
                                       MOD, STEP_END, STOP, header_text)
    from vpcli.library.context import RunContext
    from vpcli.sandbox import Sandbox, Tracked

    scans = list(world.case.scans)
    names = [scan.name for scan in scans]
    if lines is None:
        from vpcli.agent.corpus import scan_lines
        lines = scan_lines(world.case)
    scorer = TrainingVision(vision, world)
    sandbox = Sandbox(RunContext(scans=scans, vision=scorer, device=device))
    ids = [tokenizer.bos_id] + tokenizer.encode(header_text(draft.prompt, lines)) + \
        [special[CODE_START]]
    trained = [False] * len(ids)
    rows: list[torch.Tensor] = []
    phi_calls: list[torch.Tensor] = []
    streams: dict[str, int | None] = {name: None for name in names}
    failed = False
    anchor = None
    for code in split_steps(draft.program):
        known = dict(streams)
        model_text = to_model_text(code, streams)
        step_ids = tokenizer.encode(model_text) + [special[STEP_END]]
        executable = to_executable(model_text, len(phi_calls))
        if executable.phi_calls and not failed:
            window = ids + step_ids
            encodings = torch.cat(rows) if rows else None
            _, hidden, _ = agent(torch.tensor([window], device=device), encodings)
            positions = [len(ids) + i for i, t in enumerate(step_ids) if t == special[MOD]]
            phi = agent.phi(hidden[0, positions])
            for markers in executable.phi_calls:
                phi_calls.append(phi[list(markers)])
            sandbox.namespace[PHI_NAME] = Tracked(list(phi_calls), ())
        feedback_items = []
        if not failed:
            try:
                feedback_items = sandbox.run_step(executable.code).feedback
            except VoxelPromptError as error:
                # an untrained network's empty mask can stop a later library call; the
                # rest of k* is still teacher-forced for the cross-entropy
                failed, scorer.error = True, str(error)
        text, embedded = read_feedback(feedback_items, agent.config.encoding_width)
        feedback = [special[FEEDBACK_START]] + tokenizer.encode(text)[:MAX_FEEDBACK_TOKENS] + \
            [special[EMBEDDING]] * (0 if embedded is None else len(embedded)) + \
            [special[FEEDBACK_END]]
        if embedded is not None:
            rows.append(embedded.to(device))
        encoded = [name for name, count in streams.items() if count and known.get(name) != count]
        if anchor is None and scorer.encodings and encoded and not failed:
            # the step that made the first encoding; its variable from the stream counts
            # to_model_text tracks
            anchor = {'encoding': scorer.encodings[0], 'ids': step_ids + feedback,
                      'rows': None if embedded is None else embedded.to(device),
                      'variable': encoded[0], 'streams': streams[encoded[0]]}
        ids += step_ids + feedback
        trained += [True] * len(step_ids) + [False] * len(feedback)
    # one-session encodings only: a longitudinal encoding (more streams, cross-stream
    # attention) costs several times more per generator pass
    if extras and anchor is not None and len(anchor['encoding'].sessions) == 1:
        score_extra_targets(agent, tokenizer, special, extras, anchor, lines, scorer, device)
    ids.append(special[STOP])
    trained.append(True)
    ids = ids[:agent.config.max_positions]
    trained = trained[:len(ids)]
    input_ids = torch.tensor([ids], device=device)
    logits, _, _ = agent(input_ids, torch.cat(rows) if rows else None)
    targets = torch.tensor([[ids[i + 1] if trained[i + 1] else -100 for i in range(len(ids) - 1)]
                            + [-100]], device=device)
    return summed_ce(logits, targets), int((targets != -100).sum()), scorer


def score_extra_targets(agent, tokenizer, special: dict[str, int], extras, anchor, lines,
                        scorer: TrainingVision, device: str = 'cpu') -> None:
    """Score each extra target on the anchor encoding; φ from the language model reading
    the target's prompt, the anchor's encode step and feedback, up to the ``<MOD>``."""
    from vpcli.agent.model_text import to_model_text
    from vpcli.agent.tokenizer import CODE_START, MOD, header_text

    for prompt, target in extras:
        text = to_model_text(f'roi = segment({anchor["variable"]}, {target!r})',
                             {anchor['variable']: anchor['streams']})
        step_ids = tokenizer.encode(text)
        markers = [i for i, t in enumerate(step_ids) if t == special[MOD]]
        start = [tokenizer.bos_id] + tokenizer.encode(header_text(prompt, lines)) + \
            [special[CODE_START]] + anchor['ids']
        window = start + step_ids[:markers[-1] + 1]
        if len(window) > agent.config.max_positions:
            continue  # a prompt too long for the model's context
        _, hidden, _ = agent(torch.tensor([window], device=device), anchor['rows'])
        scorer.segment(anchor['encoding'], target,
                       agent.phi(hidden[0, [len(start) + i for i in markers]]))
