"""Schema-driven fuzzing of every operation (schemathesis): valid and invalid
inputs alike must never get a 5xx — bad input is always a clear 4xx."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.e2e.conftest import Live

EXAMPLES = int(os.environ.get("LITHO_FUZZ_EXAMPLES", "25"))
#: CI replays the same examples every run; elsewhere each run explores anew
#: (raise LITHO_FUZZ_EXAMPLES to search harder).
DERANDOMIZE = os.environ.get("CI") == "true"


def _fuzz(operation: Any, mode: GenerationMode, base_url: str, headers: dict[str, str]) -> None:
    @settings(max_examples=EXAMPLES, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck), derandomize=DERANDOMIZE)
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case: Any) -> None:
        response = case.call(base_url=base_url, headers={**(case.headers or {}), **headers},
                             timeout=60)
        assert response.status_code < 500, (
            f"{case.method} {case.formatted_path} {case.query} {case.body!r:.300} -> "
            f"{response.status_code} {response.text[:300]}")

    try:
        check()
    except Unsatisfiable:
        # An operation with nothing to get wrong (no parameters, no body) has
        # no negative cases.
        assert mode is GenerationMode.NEGATIVE


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
async def test_no_input_gets_a_server_error(live: Live, mode: GenerationMode) -> None:
    async with live.http.get(f"{live.url}/openapi.json") as r:
        schema = schemathesis.openapi.from_dict(await r.json())
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]  # an invalid schema raises here
        # Runs in a thread: schemathesis calls are blocking, and the test's event
        # loop must keep serving the image servers the stack may fetch from.
        await asyncio.to_thread(_fuzz, operation, mode, live.url, live.auth())
