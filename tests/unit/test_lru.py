from __future__ import annotations

import pytest

from litho.lru import Lru


def test_keeps_the_most_recently_used_entries() -> None:
    cache: Lru[str, int] = Lru(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # now the most recent
    cache.put("c", 3)  # evicts b, the least recent
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (1, None, 3)
    cache.put("a", 10)  # replacing refreshes too
    cache.put("d", 4)
    assert (cache.get("a"), cache.get("c"), len(cache)) == (10, None, 2)


def test_needs_room_for_one() -> None:
    with pytest.raises(ValueError):
        Lru(0)
