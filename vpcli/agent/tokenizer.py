"""The agent's SentencePiece tokenizer and the token layout of an agent episode.

An episode (the language model's state μ, DESIGN.md §2 "Agent loop") is laid out as::

    <s> PROMPT \\n SCAN-LINE \\n SCAN-LINE \\n <CODE>
        STEP-TEXT <STEP> <FB> FEEDBACK-TEXT <EMB>... </FB>
        STEP-TEXT <STEP> <FB> ... </FB>
        <STOP>

or, for an out-of-scope prompt, ``... <CODE> <REFUSE>``. ``<MOD>`` appears inside step text
after each volume argument of ``encode`` and after the target argument of ``segment`` (one
per encoded stream; model text version 2); ``<EMB>`` is a placeholder whose input embedding is replaced by an
encoding ε projected to the model width. Text segments are encoded separately and their
ids concatenated, so that every segment decodes back to exactly its text.

The tokenizer is trained (deterministically: fixed seed, one thread) on the corpus of
synthesized prompts and target programs; :func:`train_tokenizer` writes ``tokenizer.model``.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import Iterable, Sequence

#: special tokens, each one atomic piece (user-defined symbols of the SentencePiece model)
MOD = '<MOD>'          #: after a volume argument; φ is read from the hidden state here
STEP_END = '<STEP>'    #: ends one step of code
FEEDBACK_START = '<FB>'
FEEDBACK_END = '</FB>'
EMBEDDING = '<EMB>'    #: placeholder for one encoding ε (input embedding replaced)
STOP = '<STOP>'        #: the program is complete
REFUSE = '<REFUSE>'    #: the prompt is out of scope; no code is written
CODE_START = '<CODE>'  #: ends the state μ1 (prompt and scan lines)
SPECIAL_TOKENS = (MOD, STEP_END, FEEDBACK_START, FEEDBACK_END, EMBEDDING, STOP, REFUSE, CODE_START)

#: default number of pieces (the corpus is small and repetitive; a few thousand suffice)
DEFAULT_VOCAB_SIZE = 2000


def train_tokenizer(texts: Iterable[str], output: Path | str, vocab_size: int = DEFAULT_VOCAB_SIZE,
                    seed: int = 0, model_type: str = 'unigram') -> 'Tokenizer':
    """Train the SentencePiece model on a corpus and write it to ``output``.

    Training is deterministic: the same texts, size and seed give a byte-identical model
    (one thread, fixed random seed, corpus order kept).

    Args:
        texts: Training texts (prompts, scan lines, program steps, feedback lines).
        output: Path of the ``.model`` file to write.
        vocab_size: Upper bound on the number of pieces (smaller when the corpus cannot
            support it).
        seed: Seed of SentencePiece's random generator.
        model_type: ``unigram`` or ``bpe``.

    Returns:
        The trained tokenizer.
    """
    import sentencepiece as spm

    # every line a sentence; newlines inside texts are the user-defined symbol '\n'
    sentences = [line for text in texts for line in _split_sentences(text)]
    if not sentences:
        raise ValueError('tokenizer corpus is empty')
    spm.set_random_generator_seed(seed)
    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_writer=buffer,
        vocab_size=vocab_size, hard_vocab_limit=False, model_type=model_type,
        character_coverage=1.0, byte_fallback=True,
        # code needs its exact whitespace: no normalization, no dummy prefix
        normalization_rule_name='identity', remove_extra_whitespaces=False,
        add_dummy_prefix=False, split_digits=True, allow_whitespace_only_pieces=True,
        user_defined_symbols=list(SPECIAL_TOKENS) + ['\n'],
        unk_id=0, bos_id=1, eos_id=2, pad_id=3,
        num_threads=1, shuffle_input_sentence=False, input_sentence_size=0,
        minloglevel=2)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(buffer.getvalue())
    return Tokenizer(output)


def _split_sentences(text: str) -> list[str]:
    # keep the newline on each line so '\n' is learnt as a piece in context
    lines = text.split('\n')
    return [line + '\n' for line in lines[:-1]] + ([lines[-1]] if lines[-1] else [])


class Tokenizer:
    """SentencePiece tokenizer with the agent's special tokens.

    Args:
        model: Path to a ``.model`` file, or its bytes.
    """

    def __init__(self, model: Path | str | bytes):
        import sentencepiece as spm

        self.model_bytes = model if isinstance(model, bytes) else Path(model).read_bytes()
        self.processor = spm.SentencePieceProcessor(model_proto=self.model_bytes)
        self.special_ids = {token: self.processor.piece_to_id(token) for token in SPECIAL_TOKENS}
        for token, index in self.special_ids.items():
            if index == self.processor.unk_id():
                raise ValueError(f'tokenizer model lacks the special token {token}')
        self.bos_id = self.processor.bos_id()
        self.pad_id = self.processor.pad_id()
        self._surfaces: list[str] | None = None

    def __len__(self) -> int:
        return self.processor.get_piece_size()

    def __getitem__(self, token: str) -> int:
        return self.special_ids[token]

    def encode(self, text: str) -> list[int]:
        """Token ids of a plain-text segment (special-token strings inside are atomic)."""
        return list(self.processor.encode(text)) if text else []

    def decode(self, ids: Sequence[int]) -> str:
        """Text of token ids (special tokens written as their strings; bytes joined as UTF-8)."""
        return self.processor.decode(list(ids))

    def surface(self, index: int) -> str:
        """The exact text one token id stands for."""
        return self.surfaces[index]

    @property
    def surfaces(self) -> list[str]:
        """The text of every token id, in id order (byte pieces as their character)."""
        if self._surfaces is None:
            surfaces = []
            for index in range(len(self)):
                piece = self.processor.id_to_piece(index)
                if self.processor.is_byte(index):
                    value = int(piece[3:-1], 16)
                    # multi-byte UTF-8 fragments never appear alone in valid code or prompts
                    surfaces.append(chr(value) if value < 128 else '\ufffd')
                elif self.processor.is_control(index) or self.processor.is_unknown(index):
                    surfaces.append('')
                else:
                    surfaces.append(piece.replace('\u2581', ' '))
            self._surfaces = surfaces
        return self._surfaces

    def save(self, path: Path | str) -> None:
        """Write the ``.model`` file."""
        Path(path).write_bytes(self.model_bytes)


@dataclasses.dataclass
class Segment:
    """One part of an episode: text (encoded), a special token, or ε placeholders.

    Attributes:
        kind: ``text``, ``special`` or ``embedding``.
        value: The text, the special token string, or the ε tensor (n, width).
        trained: Whether the model is trained to predict these tokens (program text,
            step ends, stop/refusal) or only reads them (prompt, feedback).
    """
    kind: str
    value: object
    trained: bool = False


def header_text(prompt: str, scan_lines: Sequence[str]) -> str:
    """The text of the state μ1: the prompt, then one line per scan."""
    prompt = ' '.join(prompt.split())  # one line; the model never sees layout of the prompt
    return prompt + '\n' + ''.join(line + '\n' for line in scan_lines)
