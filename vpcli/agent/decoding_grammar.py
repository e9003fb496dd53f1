"""A prefix recognizer for the program subset the agent writes (constrained decoding).

While the model writes one step, every candidate token is checked: the step text with the
candidate appended must still be the prefix of a valid step. A valid step is one or more
lines, each ``name = expression`` or a call of a library function, over this subset:

- names: library functions (only called), scan names and variables defined by earlier
  steps or earlier lines of this step, a few safe builtins (only called), ``True``,
  ``False``, ``None``; new variables on the left of ``=`` (no leading underscore, not a
  library/builtin name, not ``PHI``);
- literals: integers, decimals, single-line strings, f-strings whose fields are
  expressions of this subset;
- ``+ - * / // % **``, comparisons, ``and or not``, ``x if c else y``, parentheses, tuples,
  lists, indexing, whitelisted attributes (``img0.date``);
- with ``Scope.targets`` (the agent's decoding), ``segment``'s target is a string literal
  naming a target of the task world's vocabulary (:func:`vpcli.tasks.ontology.is_target_name`);
- ``<MOD>`` exactly once after each argument of ``encode`` (which must be a variable) and
  exactly n times after the target argument of ``segment`` when its encoding argument (a
  variable) holds an encoding of n scans; nowhere else (model text version 2, see
  :mod:`vpcli.agent.model_text`). ``phi=`` is never written by the model: it is
  spliced in from the ``<MOD>`` hidden states (see :mod:`vpcli.agent.model_text`).

Nothing else (imports, definitions, loops, comments, dunder names, keyword ``phi``) can
be produced, so a generated step can only call the library. The recognizer works on the
step's text; ``<MOD>`` is represented by :data:`MOD_CHAR`.
"""

from __future__ import annotations

import dataclasses
import keyword
import re
from typing import Any

#: the one character that stands for ``<MOD>`` in step text seen by the recognizer
MOD_CHAR = '\x00'

#: vision functions whose volume arguments carry ``<MOD>``
ENCODE, SEGMENT = 'encode', 'segment'

#: reserved name of the φ constant spliced into executed code
PHI_NAME = 'PHI'

_OPERATORS = ('**', '//', '==', '!=', '<=', '>=', '+', '-', '*', '/', '%', '<', '>', '=', '(', ')',
              '[', ']', ',', '.', ':')
_COMPARISONS = ('==', '!=', '<=', '>=', '<', '>')
_NAME = re.compile(r'[A-Za-z_][A-Za-z0-9_]*')
_NUMBER = re.compile(r'[0-9]+(\.[0-9]*)?')


class Invalid(Exception):
    """The text is not a prefix of any valid step."""


class _Accept(Exception):
    """The text ends inside a construct that can still be completed validly."""


@dataclasses.dataclass
class Token:
    kind: str      # NAME NUMBER STRING FSTRING OP NEWLINE MOD
    text: str
    partial: bool = False   # the text ends inside this token


@dataclasses.dataclass(frozen=True)
class Arity:
    """The parameters of one library function, for checking a call's arguments.

    Attributes:
        positional: Positional parameter names, in order.
        required: How many of ``positional`` (the first ones) have no default.
        keyword_only: Keyword-only parameters without a default.
        variadic: Whether it takes any number of further positional arguments.
    """
    positional: tuple
    required: int
    keyword_only: tuple = ()
    variadic: bool = False


@dataclasses.dataclass
class Scope:
    """What names a step may use.

    Attributes:
        functions: Library function names (callable only).
        variables: Defined variables -> number of encoded streams (None if not an encoding).
        builtins: Builtin functions the sandbox allows (callable only).
        attributes: Attribute names that may be read.
        keywords: Function name -> parameter names it takes by keyword (never ``phi``).
        arity: Function name -> :class:`Arity`; a call must give every required parameter
            once (a positional one by position or keyword) and no more positional arguments
            than there are positional parameters. Functions not listed are not checked.
        targets: ``(text, complete) -> bool``, whether a text is a segmentation target name
            the vision network was trained on (``complete``) or the start of one; when
            given, ``segment``'s target must be a string literal it accepts. None: any
            expression.
    """
    functions: frozenset
    variables: dict
    builtins: frozenset
    attributes: frozenset
    keywords: dict = dataclasses.field(default_factory=dict)
    arity: dict = dataclasses.field(default_factory=dict)
    targets: Any = None

    def copy(self) -> 'Scope':
        return dataclasses.replace(self, variables=dict(self.variables))

    def is_new_name(self, name: str) -> bool:
        """Whether ``name`` may be assigned."""
        return (not name.startswith('_') and not keyword.iskeyword(name) and name != PHI_NAME
                and name not in self.functions and name not in self.builtins
                and name not in ('True', 'False', 'None', 'phi'))


def tokenize(text: str) -> list[Token]:
    """Lex step text; the last token is marked partial when the text may end inside it."""
    tokens: list[Token] = []
    position, length = 0, len(text)
    while position < length:
        char = text[position]
        if char == ' ':
            if position == 0 or text[position - 1] == '\n':
                raise Invalid('no indentation')
            position += 1
            continue
        if char == '\n':
            tokens.append(Token('NEWLINE', '\n'))
            position += 1
            continue
        if char == MOD_CHAR:
            tokens.append(Token('MOD', MOD_CHAR))
            position += 1
            continue
        if char in '"\'' or (char in 'f' and position + 1 < length and text[position + 1] in '"\''):
            is_f = char == 'f'
            start = position + (1 if is_f else 0)
            quote = text[start]
            end = start + 1
            while end < length and text[end] != quote:
                if text[end] in '\n\\' or text[end] == MOD_CHAR:
                    raise Invalid('no newlines, escapes or <MOD> inside strings')
                end += 1
            kind = 'FSTRING' if is_f else 'STRING'
            if end >= length:
                tokens.append(Token(kind, text[position:], partial=True))
                return tokens
            tokens.append(Token(kind, text[position:end + 1]))
            position = end + 1
            continue
        if char == 'f' and position + 1 == length:
            tokens.append(Token('NAME', 'f', partial=True))  # may start a name or an f-string
            return tokens
        match = _NAME.match(text, position) or _NUMBER.match(text, position)
        if match:
            kind = 'NAME' if char.isalpha() or char == '_' else 'NUMBER'
            position = match.end()
            if kind == 'NUMBER' and position < length and (text[position].isalpha() or text[position] == '_'):
                raise Invalid('a number runs into a name')
            tokens.append(Token(kind, match.group(), partial=position == length))
            continue
        for operator in _OPERATORS:
            if text.startswith(operator, position):
                position += len(operator)
                # '=' may become '==', '<' '<=', '*' '**', '/' '//'
                extendable = position == length and any(
                    o != operator and o.startswith(operator) for o in _OPERATORS)
                tokens.append(Token('OP', operator, partial=extendable))
                break
        else:
            if char == '!' and position + 1 == length:
                tokens.append(Token('OP', '!', partial=True))
                return tokens
            raise Invalid(f'character {char!r} is not part of the program language')
    return tokens


class _Parser:
    """Recursive-descent recognizer; in prefix mode, reaching the end of text accepts."""

    def __init__(self, tokens: list[Token], scope: Scope, prefix: bool):
        self.tokens = tokens
        self.index = 0
        self.scope = scope
        self.prefix = prefix

    # -- token access --------------------------------------------------------------------
    def peek(self) -> Token | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def at_end(self) -> bool:
        return self.index >= len(self.tokens)

    def need(self) -> Token:
        """The next token; the end of text accepts in prefix mode."""
        token = self.peek()
        if token is None:
            if self.prefix:
                raise _Accept()
            raise Invalid('the step ends inside a statement')
        return token

    def optional(self) -> Token | None:
        """The next token where one may follow; None at the end of a complete text."""
        if self.peek() is None and not self.prefix:
            return None
        return self.need()

    def check_op(self, *operators: str) -> bool:
        """Whether the next token is one of ``operators`` (a partial one accepts)."""
        token = self.optional()
        if token is None:
            return False
        if token.kind != 'OP':
            return False
        if token.text in operators:
            return True  # a partial one ('<' of '<=') is a prefix under both readings
        if token.partial and self.prefix and any(o.startswith(token.text) for o in operators):
            raise _Accept()
        return False

    def expect_op(self, operator: str) -> None:
        if not self.check_op(operator):
            raise Invalid(f'expected {operator!r}')
        self.index += 1

    def check_keyword(self, word: str) -> bool:
        token = self.optional()
        if token is None:
            return False
        if token.kind != 'NAME':
            return False
        if token.partial and self.prefix and word.startswith(token.text):
            raise _Accept()
        return token.text == word and not token.partial

    def name_token(self, allowed) -> Token:
        """Consume a NAME that is in ``allowed`` (a predicate); partial names accept on prefixes."""
        token = self.need()
        if token.kind != 'NAME':
            raise Invalid('expected a name')
        if token.partial and self.prefix:
            if allowed(token.text, True):
                raise _Accept()
            raise Invalid(f'no allowed name starts with {token.text!r}')
        if not allowed(token.text, False):
            raise Invalid(f'name {token.text!r} is not allowed here')
        self.index += 1
        return token

    # -- grammar -------------------------------------------------------------------------
    def step(self) -> None:
        statements = 0
        while not self.at_end():
            self.statement()
            statements += 1
            token = self.need()
            if token.kind != 'NEWLINE':
                raise Invalid('expected the end of the line')
            self.index += 1
        if statements == 0 and not self.prefix:
            raise Invalid('a step needs at least one statement')

    def statement(self) -> None:
        token = self.need()
        if token.kind == 'NAME':
            following = self.tokens[self.index + 1] if self.index + 1 < len(self.tokens) else None
            if token.partial and self.prefix:
                # any identifier may start an assignment
                if _NAME.fullmatch(token.text) and not token.text.startswith('_'):
                    raise _Accept()
                raise Invalid('bad name')
            if following is None and self.prefix:
                if self.scope.is_new_name(token.text) or token.text in self.scope.functions:
                    raise _Accept()
            if following is not None and following.kind == 'OP' and following.text == '=' and (
                    not following.partial or not self.prefix or self.index + 2 < len(self.tokens)):
                if not self.scope.is_new_name(token.text) and token.text not in self.scope.variables:
                    raise Invalid(f'cannot assign to {token.text!r}')
                self.index += 2
                streams = self.expression()
                self.scope.variables[token.text] = streams
                return
            if following is not None and following.kind == 'OP' and following.text == '=' and following.partial:
                # 'x =' at the end: assignment or the start of 'x == ...' (not a statement)
                if self.scope.is_new_name(token.text) or token.text in self.scope.variables:
                    raise _Accept()
                raise Invalid('bad assignment')
        # expression statement: must be a call of a library function
        start = self.index
        self.expression()
        if not (self.index - start >= 3 and self.tokens[start].kind == 'NAME'
                and self.tokens[start].text in self.scope.functions
                and self.tokens[self.index - 1].text == ')'):
            raise Invalid('a line is an assignment or a call of a library function')

    def expression(self):
        """Parse an expression; returns the stream count when it is an ``encode`` call."""
        streams = self.disjunction()
        if self.check_keyword('if'):
            self.index += 1
            self.disjunction()
            if not self.check_keyword('else'):
                raise Invalid("expected 'else'")
            self.index += 1
            self.expression()
            return None
        return streams

    def chain(self, operand, check, *operators):
        """A left-associative chain ``operand (operator operand)*``, an operator being what
        ``check(*operators)`` accepts: the operand's stream count when no operator follows,
        else None (the result is a plain value)."""
        streams = operand()
        while check(*operators):
            self.index += 1
            operand()
            streams = None
        return streams

    def disjunction(self):
        return self.chain(self.conjunction, self.check_keyword, 'or')

    def conjunction(self):
        return self.chain(self.negation, self.check_keyword, 'and')

    def negation(self):
        if self.check_keyword('not'):
            self.index += 1
            self.negation()
            return None
        return self.comparison()

    def comparison(self):
        return self.chain(self.arithmetic, self.check_op, *_COMPARISONS)

    def arithmetic(self):
        return self.chain(self.term, self.check_op, '+', '-')

    def term(self):
        return self.chain(self.factor, self.check_op, '*', '/', '//', '%')

    def factor(self):
        if self.check_op('-', '+'):
            self.index += 1
            self.factor()
            return None
        streams = self.power()
        return streams

    def power(self):
        streams = self.primary()
        if self.check_op('**'):
            self.index += 1
            self.factor()
            return None
        return streams

    def primary(self):
        token = self.need()
        scope = self.scope
        if token.kind == 'NUMBER':
            self.index += 1
            return self.trailers(None, kind='value')
        if token.kind == 'STRING':
            if token.partial:
                raise _Accept() if self.prefix else Invalid('unterminated string')
            self.index += 1
            return None
        if token.kind == 'FSTRING':
            self.fstring(token)
            self.index += 1
            return None
        if token.kind == 'OP' and token.text in '([':
            closing = ')' if token.text == '(' else ']'
            self.index += 1
            if self.check_op(closing):
                self.index += 1
            else:
                self.expression()
                while self.check_op(','):
                    self.index += 1
                    if self.check_op(closing):
                        break
                    self.expression()
                self.expect_op(closing)
            return self.trailers(None, kind='value')
        if token.kind == 'NAME':
            def allowed(text: str, partial: bool) -> bool:
                names = (set(scope.variables) | set(scope.functions) | set(scope.builtins)
                         | {'True', 'False', 'None'})
                if partial:  # a lone 'f' may still open an f-string
                    return any(name.startswith(text) for name in names) or text == 'f'
                return text in names
            name = self.name_token(allowed).text
            if name in scope.functions or name in scope.builtins:
                self.expect_op('(')
                streams = self.call_arguments(name)
                return self.trailers(streams, kind='value')
            if name in ('True', 'False', 'None'):
                return None
            return self.trailers(scope.variables.get(name), kind='variable')
        raise Invalid(f'unexpected {token.text!r}')

    def trailers(self, streams, kind: str):
        while True:
            if self.check_op('['):
                self.index += 1
                self.expression()
                self.expect_op(']')
                streams = None
            elif self.check_op('.'):
                self.index += 1
                self.name_token(lambda text, partial: any(a.startswith(text) for a in self.scope.attributes)
                                if partial else text in self.scope.attributes)
                streams = None
            else:
                return streams

    def call_arguments(self, function: str):
        """Arguments after '(' up to and including ')'; returns encode's stream count."""
        position, keywords, encoded = 0, False, 0
        named: set[str] = set()
        while True:
            if self.check_op(')'):
                self.close_call(function, position, named)
                break
            token = self.need()
            following = self.tokens[self.index + 1] if self.index + 1 < len(self.tokens) else None
            keyword_names = self.scope.keywords.get(function, frozenset())
            if token.kind == 'NAME' and self.prefix and (token.partial or following is None):
                # the end of text inside a possible keyword name
                if any(k.startswith(token.text) for k in keyword_names) if token.partial \
                        else token.text in keyword_names:
                    raise _Accept()
            if (token.kind == 'NAME' and following is not None and following.kind == 'OP'
                    and following.text == '='):
                if token.text not in keyword_names:
                    raise Invalid(f'{function} has no keyword argument {token.text!r}')
                if token.text in named:
                    raise Invalid(f'{function} given {token.text!r} twice')
                named.add(token.text)
                self.index += 2
                keywords = True
                self.expression()
            else:
                if keywords:
                    raise Invalid('positional argument after keyword argument')
                if function == ENCODE:
                    self.markers(self.volume_argument(function), 1)
                    encoded += 1
                elif function == SEGMENT and position == 0:
                    encoded = self.scope.variables[self.volume_argument(function)]
                elif function == SEGMENT and position == 1:
                    if self.scope.targets is None:
                        self.expression()
                    else:
                        self.target_name()
                    self.markers('the target', encoded)
                else:
                    self.expression()
                position += 1
            if self.check_op(','):
                self.index += 1
                continue
            if not self.check_op(')'):
                raise Invalid("expected ')'")
            self.close_call(function, position, named)
            break
        if function == ENCODE:
            if encoded == 0:
                raise Invalid('encode needs at least one scan')
            return encoded
        if function == SEGMENT and position < 2:
            raise Invalid('segment needs an encoding and a target')
        return None

    def target_name(self) -> None:
        """``segment``'s target: a string literal naming a known target (or its start)."""
        token = self.need()
        if token.kind != 'STRING':
            raise Invalid("segment's target must be a quoted target name")
        if token.partial:
            if not self.scope.targets(token.text[1:], False):
                raise Invalid(f'no segmentation target starts {token.text[1:]!r}')
            raise _Accept() if self.prefix else Invalid('unterminated string')
        if not self.scope.targets(token.text[1:-1], True):
            raise Invalid(f'unknown segmentation target {token.text}')
        self.index += 1

    def close_call(self, function: str, positional: int, named: set[str]) -> None:
        """Consume the ')' of a call that gives every required argument and no extra one."""
        if function in self.scope.arity:
            arity = self.scope.arity[function]
            if positional > len(arity.positional) and not arity.variadic:
                raise Invalid(f'{function} takes at most {len(arity.positional)} positional arguments')
            twice = named & set(arity.positional[:positional])
            if twice:
                raise Invalid(f'{function} given {", ".join(sorted(twice))} twice')
            missing = [name for name in arity.positional[positional:arity.required] + arity.keyword_only
                       if name not in named]
            if missing:
                raise Invalid(f'{function} is missing {", ".join(missing)}')
        self.index += 1

    def volume_argument(self, function: str) -> str:
        """A scan variable (``encode``) or an encoding variable (``segment``); returns it."""
        scope = self.scope
        if function == ENCODE:
            allowed = lambda text, partial: (any(v.startswith(text) for v in scope.variables
                                                 if scope.variables[v] is None)
                                             if partial else scope.variables.get(text, 0) is None
                                             and text in scope.variables)
        else:
            allowed = lambda text, partial: (any(v.startswith(text) for v, n in scope.variables.items() if n)
                                             if partial else bool(scope.variables.get(text)))
        return self.name_token(allowed).text

    def markers(self, after, count: int) -> None:
        """Exactly ``count`` ``<MOD>`` tokens (after ``after``, for the error message)."""
        for _ in range(count):
            token = self.need()
            if token.kind != 'MOD':
                raise Invalid(f'expected <MOD> after {after}')
            self.index += 1

    def fstring(self, token: Token) -> None:
        body = token.text[2:] if token.partial else token.text[2:-1]
        position = 0
        while position < len(body):
            char = body[position]
            if char == '}':
                raise Invalid('single } in f-string')
            if char != '{':
                position += 1
                continue
            end = body.find('}', position)
            field = body[position + 1:] if end < 0 else body[position + 1:end]
            expression_text, _, format_spec = field.partition(':')
            if '{' in field or '!' in field:
                raise Invalid('nested or converted f-string field')
            if format_spec and not re.fullmatch(r'[.0-9a-z%,+]*', format_spec):
                raise Invalid('bad format specification')
            complete = end >= 0
            sub = _Parser(tokenize(expression_text), self.scope, prefix=not complete)
            try:
                sub.expression()
                if not sub.at_end():
                    raise Invalid('unexpected text in f-string field')
            except _Accept:
                if complete:
                    raise Invalid('incomplete f-string field') from None
            if not complete:
                break
            position = end + 1
        if token.partial:
            if self.prefix:
                raise _Accept()
            raise Invalid('unterminated f-string')


def check_prefix(text: str, scope: Scope) -> bool:
    """Whether ``text`` can still be completed to a valid step."""
    try:
        tokens = tokenize(text)
        _Parser(tokens, scope.copy(), prefix=True).step()
        return True
    except _Accept:
        return True
    except Invalid:
        return False


def check_complete(text: str, scope: Scope) -> Scope:
    """Check a finished step; returns the scope after it (variables it defines).

    Raises:
        Invalid: The text is not a valid step.
    """
    if not text.endswith('\n'):
        raise Invalid('a step ends with a newline')
    scope = scope.copy()
    parser = _Parser(tokenize(text), scope, prefix=False)
    try:
        parser.step()
    except _Accept:  # cannot happen outside prefix mode; kept as a guard
        raise Invalid('incomplete step') from None
    return scope
