"""Validation patterns, matched by RE2 in time linear in the input.

A variable definition's ``pattern`` is written by a template author, who may
be hostile. Python's ``re`` backtracks, so ``\\w*\\w*\\w*\\w*!`` takes seconds
on a few hundred characters; RE2 (``google-re2``) compiles every pattern to an
automaton and never backtracks, so no pattern can stall a worker. What RE2
cannot express in linear time (backreferences, lookaround, possessive
quantifiers) does not compile, and the definition is refused on save.
"""

from __future__ import annotations

import functools
from typing import Any

import re2

#: Memory RE2 may use for one compiled pattern (its program and DFA cache).
#: A pattern whose program needs more fails to compile, quickly ("pattern too
#: large"); a DFA that outgrows it falls back to RE2's NFA, still linear.
_MAX_MEMORY = 1024 * 1024
#: Largest compiled program accepted. Matching time per character and
#: compile time both grow with it: at this size the worst case measured was
#: ~1.5 µs a character (NFA fallback) and a few milliseconds to compile.
#: Every ordinary pattern is far smaller (an e-mail pattern is 20, `.{0,300}`
#: 2,700); what exceeds it is counted repetition of a large class such as
#: `\p{L}{1,100}`, which `\p{L}+` with minLength/maxLength replaces.
MAX_PROGRAM_SIZE = 5000
_CACHE_SIZE = 128

class PatternError(ValueError):
    """The pattern is not one RE2 can match in linear time."""


class Pattern:
    """A compiled pattern; ``fullmatch`` runs in linear time."""

    __slots__ = ("_compiled", "size", "source")

    def __init__(self, source: str, compiled: Any) -> None:
        self.source = source
        self._compiled = compiled
        #: Instructions in the compiled program: matching costs up to a few
        #: nanoseconds per instruction per character (RE2's NFA, when the DFA
        #: runs out of memory), so ``size × len(text)`` bounds the work.
        self.size: int = compiled.programsize

    def fullmatch(self, value: str) -> bool:
        try:
            return self._compiled.fullmatch(value) is not None
        except UnicodeError:  # text that is not valid Unicode matches nothing
            return False

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Pattern) and other.source == self.source

    def __hash__(self) -> int:
        return hash(self.source)

    def __repr__(self) -> str:
        return f"Pattern({self.source!r})"


@functools.lru_cache(maxsize=_CACHE_SIZE)
def compile_pattern(source: str) -> Pattern:
    """The compiled pattern; raises PatternError naming what RE2 refused.

    Cached, because a render checks its template's definitions every time."""
    options = re2.Options()
    options.max_mem = _MAX_MEMORY
    options.log_errors = False  # a refused pattern is the author's mistake, not ours
    try:
        compiled = re2.compile(source, options)
    except re2.error as exc:
        raise PatternError(_reason(exc)) from None
    except (UnicodeError, TypeError, ValueError):
        raise PatternError("is not valid text") from None
    if compiled.programsize > MAX_PROGRAM_SIZE:
        raise PatternError(
            f"pattern too complex (its program has {compiled.programsize} instructions, "
            f"at most {MAX_PROGRAM_SIZE}); counted repetition of a large class such as "
            "\\p{L}{1,100} is the usual cause: write \\p{L}+ and use minLength/maxLength")
    return Pattern(source, compiled)


def _reason(exc: Exception) -> str:
    detail = exc.args[0] if exc.args else ""
    if isinstance(detail, bytes):
        detail = detail.decode("utf-8", "replace")
    text = str(detail).strip() or "not supported"
    return text[:200]
