"""The template language behind the service's :class:`Expander` seam."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from litho.errors import FieldError
from services.template._lang._engine import CompiledTemplate, Engine

#: Estimated bytes of memory per tag of a compiled template (its AST and
#: closures): 500 KiB of ``{{ 1 }}`` (~73,000 tags) measured ~55 MB compiled.
BYTES_PER_TAG = 800


def compiled_weight(source: str) -> int:
    """An estimate of the memory a compiled ``source`` takes: its text plus a
    fixed cost per tag, which is what grows the tree."""
    return len(source) + BYTES_PER_TAG * source.count("{{")


class LangExpander:
    """Compiles each distinct source once and keeps the most recent ones:
    at most ``cache_size`` entries and ``max_bytes`` of estimated memory
    (``compiled_weight``); a source heavier than a quarter of that is compiled
    for each use and never cached, so a few huge sources (one-shot renders
    need no stored template) cannot fill the memory or evict every card.

    Keys are SHA-256 digests of the source, so the cache holds no second copy
    of large keys; a saved version's source never changes, so entries never go
    stale. Safe to share between threads.
    """

    def __init__(self, engine: Engine | None = None, *, cache_size: int = 256,
                 max_bytes: int = 64 * 1024 * 1024) -> None:
        if cache_size < 0 or max_bytes < 0:
            raise ValueError("cache_size and max_bytes must not be negative")
        self._engine = engine or Engine()
        self._cache_size = cache_size
        self._max_bytes = max_bytes
        self._weight = 0
        self._cache: OrderedDict[bytes, tuple[CompiledTemplate, int]] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def engine(self) -> Engine:
        return self._engine

    def cached(self) -> int:
        with self._lock:
            return len(self._cache)

    def compiled(self, source: str, *, escape: bool = True,
                 url: bool = False) -> CompiledTemplate:
        """The compiled template; raises InvalidArgument listing every problem.
        ``escape=False`` compiles it for plain text, ``url=True`` for a URL
        (``Engine.compile``), each cached apart from the HTML one."""
        # The mode comes first, one fixed byte: no source text can make its
        # key collide with another mode's (a suffix could be written into
        # a source, and a URL would get an HTML compile without encoding).
        mode = b"u" if url else b"h" if escape else b"p"
        key = hashlib.sha256(mode + source.encode("utf-8", "surrogatepass")).digest()
        with self._lock:
            entry = self._cache.get(key)
            if entry is not None:
                self._cache.move_to_end(key)
                return entry[0]
        template = (self._engine.compile(source, url=True) if url
                    else self._engine.compile(source) if escape
                    else self._engine.compile(source, escape=False))
        weight = compiled_weight(source)
        if self._cache_size and weight <= self._max_bytes // 4:
            with self._lock:
                if key not in self._cache:
                    self._cache[key] = (template, weight)
                    self._weight += weight
                self._cache.move_to_end(key)
                while len(self._cache) > self._cache_size or self._weight > self._max_bytes:
                    _, (_, dropped) = self._cache.popitem(last=False)
                    self._weight -= dropped
        return template

    def check(self, source: str) -> list[FieldError]:
        return self._engine.check(source)

    def expand(
        self,
        source: str,
        variables: Mapping[str, Any],
        *,
        max_output: int,
        timeout: float | None = None,
        deadline: float | None = None,
        step_cap: int | None = None,
        escape: bool = True,
        url: bool = False,
    ) -> str:
        return self.compiled(source, escape=escape, url=url).render(
            variables, max_output=max_output, timeout=timeout, deadline=deadline,
            step_cap=step_cap)
