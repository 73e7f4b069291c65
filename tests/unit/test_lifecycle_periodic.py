"""litho.lifecycle.periodic: background rounds that survive a failing one."""

from __future__ import annotations

import asyncio

from litho import lifecycle


async def test_rounds_go_on_after_a_failure_and_stop_with_the_block() -> None:
    rounds: list[int] = []
    third = asyncio.Event()

    async def work() -> None:
        rounds.append(len(rounds))
        if len(rounds) == 1:
            raise RuntimeError("the first round fails")
        if len(rounds) == 3:
            third.set()

    async with lifecycle.periodic(work, 0.01, name="test"):
        await asyncio.wait_for(third.wait(), 5)
    done = len(rounds)
    await asyncio.sleep(0.05)
    assert done >= 3 and len(rounds) == done  # nothing runs after the block
