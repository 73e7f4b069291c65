"""The template language behind the service's :class:`Expander` seam."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from litho.errors import FieldError
from services.template._lang._engine import CompiledTemplate, Engine


class LangExpander:
    """Compiles each distinct source once and keeps the most recent ``cache_size``.

    Keys are SHA-256 digests of the source, so the cache holds no second copy
    of large keys; a saved version's source never changes, so entries never go
    stale. Safe to share between threads.
    """

    def __init__(self, engine: Engine | None = None, *, cache_size: int = 256) -> None:
        if cache_size < 0:
            raise ValueError("cache_size must not be negative")
        self._engine = engine or Engine()
        self._cache_size = cache_size
        self._cache: OrderedDict[bytes, CompiledTemplate] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def engine(self) -> Engine:
        return self._engine

    def cached(self) -> int:
        with self._lock:
            return len(self._cache)

    def compiled(self, source: str) -> CompiledTemplate:
        """The compiled template; raises InvalidArgument listing every problem."""
        key = hashlib.sha256(source.encode("utf-8", "surrogatepass")).digest()
        with self._lock:
            template = self._cache.get(key)
            if template is not None:
                self._cache.move_to_end(key)
                return template
        template = self._engine.compile(source)
        if self._cache_size:
            with self._lock:
                self._cache[key] = template
                self._cache.move_to_end(key)
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
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
    ) -> str:
        return self.compiled(source).render(
            variables, max_output=max_output, timeout=timeout, deadline=deadline,
            step_cap=step_cap)
