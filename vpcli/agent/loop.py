"""The plan–execute–feedback loop (DESIGN.md §2 "Agent loop"; paper §3.1, App. A.1–A.2).

State μ1 is the prompt and one line per scan (``Scan.describe()``). The model writes one
step under constrained decoding (:mod:`vpcli.agent.decoding_grammar`) until ``<STEP>``; the step's
``<MOD>`` hidden states give φ; the step runs (markers replaced by ``phi=PHI[k]``); what
``read`` returned is appended between ``<FB>`` and ``</FB>`` (text as tokens, encodings as
projected ε rows on ``<EMB>`` placeholders); this repeats until ``<STOP>`` or the step limit.
``<REFUSE>`` as the first step (or the gate of :mod:`vpcli.agent.refusal`) refuses the
prompt: no code is written or run.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Protocol, Sequence

import torch

from vpcli.agent import decoding_grammar
from vpcli.agent.decoding_grammar import MOD_CHAR, PHI_NAME, Scope
from vpcli.agent.model import AgentModel
from vpcli.agent.model_text import join_steps, phi_step, to_executable
from vpcli.agent.tokenizer import (CODE_START, EMBEDDING, FEEDBACK_END, FEEDBACK_START, MOD, REFUSE,
                                   STEP_END, STOP, Tokenizer, header_text)
from vpcli.agent.refusal import MODEL_REFUSAL, REFUSAL_ANSWER  # noqa: F401 - REFUSAL_ANSWER is re-exported
from vpcli.errors import RefusedError

#: default most steps of one program
DEFAULT_MAX_STEPS = 12
#: default most tokens of one step: above the longest target step of the task world (a
#: location step segments 15 regions, about 300 tokens; tests/test_agent_loop.py checks it)
DEFAULT_MAX_STEP_TOKENS = 512
#: most tokens of feedback text per step (long prints are cut: the model needs the gist)
MAX_FEEDBACK_TOKENS = 96


class Executor(Protocol):
    """Where generated steps run: the sandbox, or a dry checker for evaluation."""

    def define(self, name: str, value: Any) -> None:
        """Bind a constant (``PHI``) in the program namespace."""

    def run(self, code: str) -> list:
        """Validate and run one step; returns its ``FeedbackItem`` list."""


@dataclasses.dataclass
class StepResult:
    """One step of a run.

    Attributes:
        index: Step number from 1.
        model_text: The step as the model wrote it (with ``<MOD>`` markers).
        code: The code that ran (``phi=PHI[k]`` spliced in).
        feedback_text: Feedback text the model read back.
        embeddings: Number of ε rows the model read back.
        generate_seconds: Time spent generating the step, in s.
        run_seconds: Time spent running it, in s.
        tokens: Number of tokens the model generated for it.
    """
    index: int
    model_text: str
    code: str
    feedback_text: str
    embeddings: int
    generate_seconds: float
    run_seconds: float
    tokens: int


@dataclasses.dataclass
class AgentRun:
    """Everything a run of the loop produced.

    Attributes:
        prompt: The prompt.
        scan_lines: The scan lines of the state.
        steps: Every step, in order.
        phi: Per vision call, per stream, the φ vector (lists of floats).
        stopped: True when the model emitted ``<STOP>``; False when the step limit ended it.
        refused: True when the prompt was refused.
        refusal_reason: Why, when refused.
        read_as: The prompt as the model read it, when typing slips were read back
            (:mod:`vpcli.agent.spelling`); None when it read the prompt as typed.
    """
    prompt: str
    scan_lines: list[str]
    steps: list[StepResult] = dataclasses.field(default_factory=list)
    phi: list[list[list[float]]] = dataclasses.field(default_factory=list)
    stopped: bool = False
    refused: bool = False
    refusal_reason: str = ''
    read_as: str | None = None

    @property
    def answer(self) -> str | None:
        """The plain refusal answer for a refused prompt, else None."""
        return REFUSAL_ANSWER if self.refused else None

    def script(self) -> str:
        """The replayable program: a ``PHI = [...]`` step (when φ was used), then the steps."""
        steps = [step.code for step in self.steps]
        if self.phi:
            steps = [phi_step(self.phi)] + steps
        return join_steps(steps)

    def model_program(self) -> str:
        """The program as the model wrote it (``<MOD>`` markers, no ``PHI``), one step per block."""
        return join_steps([step.model_text for step in self.steps])


def read_feedback(items, encoding_width: int) -> tuple[str, torch.Tensor | None]:
    """What a step's ``read`` calls hand the model: their text lines joined, and the ε rows
    of every encoding read, ``(n, encoding_width)`` (None when there are none)."""
    texts, rows = [], []
    for item in items:
        if getattr(item, 'text', None):
            texts.append(str(item.text))
        embeddings = getattr(item, 'embeddings', None)
        if embeddings is not None:
            rows.append(torch.as_tensor(embeddings, dtype=torch.float32).reshape(-1, encoding_width))
    return '\n'.join(texts), torch.cat(rows) if rows else None


def library_scope(scan_names: Sequence[str]) -> Scope:
    """The names a fresh program may use: the library, the sandbox's builtins, the scans;
    ``segment`` targets from the task world's vocabulary (the names the model and the
    vision network were trained on)."""
    from vpcli.library.registry import registry
    from vpcli.tasks.ontology import is_target_name

    functions = registry()
    keywords, arity = {}, {}
    for name, entry in functions.items():
        parameters = [p for p in entry.signature.parameters.values() if p.name != 'phi']
        keywords[name] = frozenset(p.name for p in parameters
                                   if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
        positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        arity[name] = decoding_grammar.Arity(
            positional=tuple(p.name for p in positional),
            required=sum(p.default is p.empty for p in positional),
            keyword_only=tuple(p.name for p in parameters
                               if p.kind == p.KEYWORD_ONLY and p.default is p.empty),
            variadic=any(p.kind == p.VAR_POSITIONAL for p in parameters))
    # the program language is the sandbox's: the decoder can only write what it will run
    from vpcli.sandbox import SAFE_BUILTINS, SCAN_ATTRIBUTES
    builtins, attributes = frozenset(SAFE_BUILTINS), frozenset(SCAN_ATTRIBUTES)
    return Scope(functions=frozenset(functions), variables={name: None for name in scan_names},
                 builtins=builtins, attributes=attributes, keywords=keywords, arity=arity,
                 targets=is_target_name)


class SandboxExecutor:
    """Runs steps in a :class:`vpcli.sandbox.Sandbox` (the live run)."""

    def __init__(self, sandbox):
        self.sandbox = sandbox

    def define(self, name: str, value: Any) -> None:
        from vpcli.sandbox import Tracked
        self.sandbox.namespace[name] = Tracked(value, ())

    def run(self, code: str) -> list:
        return list(self.sandbox.run_step(code).feedback)


class Agent:
    """The language model with its tokenizer, ready to write programs.

    Args:
        model: The language model.
        tokenizer: Its tokenizer.
        device: Torch device to run on.
    """

    def __init__(self, model: AgentModel, tokenizer: Tokenizer, device: str = 'cpu'):
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.device = device
        self.special = {token: tokenizer[token] for token in
                        (MOD, STEP_END, FEEDBACK_START, FEEDBACK_END, EMBEDDING, STOP, REFUSE, CODE_START)}
        surfaces = tokenizer.surfaces
        # ids that can appear inside step text, with their text for the recognizer
        self._step_text = {}
        for index, text in enumerate(surfaces):
            if index == self.special[MOD]:
                self._step_text[index] = MOD_CHAR
            elif text and index not in self.special.values() and text.isascii() \
                    and MOD_CHAR not in text:
                self._step_text[index] = text

    @classmethod
    def load(cls, path: Path | str, device: str = 'cpu') -> 'Agent':
        """An agent from a checkpoint written by training (model and tokenizer in one file)."""
        checkpoint = torch.load(path, map_location=device, weights_only=True)
        if not checkpoint.get('tokenizer'):
            raise ValueError(f'{path}: checkpoint has no tokenizer')
        return cls(AgentModel.from_checkpoint(checkpoint), Tokenizer(checkpoint['tokenizer']), device)

    # ---------------------------------------------------------------------------------
    def run(self, prompt: str, scan_lines: Sequence[str], scan_names: Sequence[str],
            executor: Executor, max_steps: int = DEFAULT_MAX_STEPS,
            max_step_tokens: int = DEFAULT_MAX_STEP_TOKENS, raise_on_refusal: bool = False,
            gate: bool = True) -> AgentRun:
        """Write and run a program for a prompt.

        Args:
            prompt: The user's prompt.
            scan_lines: One line per scan (``Scan.describe()``).
            scan_names: The scans' variable names (``img0``, ...).
            executor: Where steps run (a :class:`SandboxExecutor` for a real run).
            max_steps: Most steps before the loop ends without ``<STOP>``.
            max_step_tokens: Most tokens in one step.
            raise_on_refusal: Raise :class:`RefusedError` instead of returning a refused run.
            gate: Apply the rule-based gate of :mod:`vpcli.agent.refusal` before the model.

        Returns:
            The run record.
        """
        from vpcli.agent.refusal import gate_decision, refusal_message
        from vpcli.agent.spelling import read_prompt

        record = AgentRun(prompt=prompt, scan_lines=list(scan_lines))
        decision = gate_decision(prompt) if gate else None
        if decision is None:
            read = read_prompt(prompt)
            record.read_as = read if read != prompt else None
            self._generate(record, scan_names, executor, max_steps, max_step_tokens)
        else:
            record.refused, record.refusal_reason = True, decision.rule
        if record.refused and raise_on_refusal:
            raise RefusedError(refusal_message(record.refusal_reason,
                                               decision.matched if decision else ''))
        return record

    @torch.no_grad()
    def _generate(self, record: AgentRun, scan_names, executor: Executor, max_steps: int,
                  max_step_tokens: int) -> None:
        from transformers import DynamicCache

        scope = library_scope(scan_names)
        ids = [self.tokenizer.bos_id] + self.tokenizer.encode(header_text(record.read_as or record.prompt,
                                                                          record.scan_lines)) \
            + [self.special[CODE_START]]
        cache = DynamicCache()
        logits, _ = self._feed(ids, None, cache)
        max_positions = self.model.config.max_positions
        for step_index in range(1, max_steps + 1):
            started = time.perf_counter()
            step_ids, text, mod_hidden = [], '', []
            while True:
                if cache.get_seq_length() >= max_positions - 1 or len(step_ids) >= max_step_tokens:
                    # the episode is out of room: end like the step limit does
                    return
                choice = self._choose(logits, text, scope, step_index, record)
                if choice in (self.special[STOP], self.special[REFUSE]):
                    record.stopped = choice == self.special[STOP]
                    record.refused = choice == self.special[REFUSE]
                    if record.refused:
                        record.refusal_reason = MODEL_REFUSAL
                    return
                step_ids.append(choice)
                logits, hidden = self._feed([choice], None, cache)
                if choice == self.special[STEP_END]:
                    break
                text += self._step_text[choice]
                if choice == self.special[MOD]:
                    mod_hidden.append(hidden)
            generate_seconds = time.perf_counter() - started
            scope = decoding_grammar.check_complete(text, scope)
            model_text = text.replace(MOD_CHAR, MOD)
            executable = to_executable(model_text, len(record.phi))
            if mod_hidden:
                phi = self.model.phi(torch.stack(mod_hidden)).float().cpu().tolist()
                for markers in executable.phi_calls:
                    record.phi.append([phi[i] for i in markers])
                executor.define(PHI_NAME, [list(map(list, call)) for call in record.phi])
            started = time.perf_counter()
            feedback = executor.run(executable.code)
            run_seconds = time.perf_counter() - started
            feedback_text, encodings = self._feedback(feedback)
            feedback_ids = [self.special[FEEDBACK_START]] + \
                self.tokenizer.encode(feedback_text)[:MAX_FEEDBACK_TOKENS] + \
                [self.special[EMBEDDING]] * (0 if encodings is None else encodings.shape[0]) + \
                [self.special[FEEDBACK_END]]
            record.steps.append(StepResult(
                index=step_index, model_text=model_text, code=executable.code,
                feedback_text=feedback_text, embeddings=0 if encodings is None else encodings.shape[0],
                generate_seconds=generate_seconds, run_seconds=run_seconds, tokens=len(step_ids)))
            if cache.get_seq_length() + len(feedback_ids) >= max_positions - 1:
                return
            logits, _ = self._feed(feedback_ids, encodings, cache)

    def _feed(self, ids: list[int], encodings, cache):
        """Run new tokens through the model; returns the last logits and hidden state."""
        input_ids = torch.tensor([ids], device=self.device)
        if encodings is not None:
            encodings = encodings.to(self.device)
        logits, hidden, _ = self.model(input_ids, encodings, past_key_values=cache, use_cache=True)
        return logits[0, -1].float(), hidden[0, -1]

    def _feedback(self, items) -> tuple[str, torch.Tensor | None]:
        return read_feedback(items, self.model.config.encoding_width)

    def _choose(self, logits: torch.Tensor, text: str, scope: Scope, step_index: int,
                record: AgentRun) -> int:
        """The most probable token that keeps the step valid (greedy constrained decoding)."""
        at_start = text == ''
        order = torch.argsort(logits, descending=True).tolist()
        for index in order:
            if self._valid(index, text, scope, at_start, step_index):
                return index
        raise RuntimeError('no token continues the step validly')  # the grammar always allows one

    def _valid(self, index: int, text: str, scope: Scope, at_start: bool, step_index: int) -> bool:
        special = self.special
        if index == special[STOP]:
            return at_start and step_index > 1
        if index == special[REFUSE]:
            return at_start and step_index == 1
        if index == special[STEP_END]:
            if not text.endswith('\n'):
                return False
            try:
                decoding_grammar.check_complete(text, scope)
                to_executable(text.replace(MOD_CHAR, MOD), 0)
            except (decoding_grammar.Invalid, SyntaxError, ValueError):
                return False
            return True
        piece = self._step_text.get(index)
        if piece is None:
            return False
        candidate = text + piece
        if MOD in candidate:
            return False  # the marker only ever comes from the <MOD> token itself
        if at_start and not candidate.strip(' '):
            return False
        if '\n\n' in candidate or candidate.startswith('\n') or ' \n' in candidate \
                or '\n ' in candidate:
            return False  # one statement per line, no blank lines or indentation
        return decoding_grammar.check_prefix(candidate, scope)


class DryExecutor:
    """Checks steps without running them (program evaluation without scans or a vision network).

    Each step is parsed and validated by the sandbox's rules against the names defined so far; ``read`` feedback is simulated as in code-only
    training (:func:`vpcli.agent.episodes.simulated_feedback`).

    Args:
        scan_names: The scans' variable names.
        seed: Seeds the simulated feedback values.
        encoding_width: Width of simulated ε rows.
    """

    def __init__(self, scan_names: Sequence[str], seed: int = 0, encoding_width: int = 256):
        import numpy as np

        self.names = set(scan_names)
        self.streams: dict[str, int | None] = {name: None for name in scan_names}
        self.units: dict[str, str | None] = {}
        self.rng = np.random.default_rng(seed)
        self.encoding_width = encoding_width
        self.steps: list[str] = []

    def define(self, name: str, value: Any) -> None:
        self.names.add(name)

    def run(self, code: str) -> list:
        import ast

        from vpcli.agent.episodes import simulated_feedback
        from vpcli.agent.model_text import _track_streams
        from vpcli.library.context import FeedbackItem

        from vpcli.library.registry import registry
        from vpcli.sandbox import Step, validate_step

        tree = ast.parse(code)
        validate_step(Step(len(self.steps) + 1, code), set(self.names), registry())
        self.steps.append(code)
        for statement in tree.body:
            _track_streams(statement, self.streams)
            if isinstance(statement, ast.Assign):
                self.names.update(t.id for t in statement.targets if isinstance(t, ast.Name))
        text, rows = simulated_feedback(code, self.streams, self.rng, self.units)
        items = []
        for line in text.split('\n') if text else []:
            if line.startswith('encoding of '):  # as vision's Encoding.to_feedback gives it
                count = line.count(',') + 1
                items.append(FeedbackItem(text=line, embeddings=torch.from_numpy(
                    self.rng.standard_normal((count, self.encoding_width)).astype('float32'))))
            else:
                items.append(FeedbackItem(text=line))
        return items
