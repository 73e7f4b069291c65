"""Where an expansion runs: cheap ones on the event loop, the rest in a worker.

Uses the real service class over the embedded SQLite document store; only the
expander is wrapped, to record which thread ran each attempt.
"""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from litho.docstore import open_document_store
from litho.errors import InvalidArgument
from services.template._lang import LangExpander
from services.template._model import Limits, Spec
from services.template._service import Templates
from services.template._store import TemplateRepository


class RecordingExpander(LangExpander):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[bool, int | None]] = []  # (on the loop's thread, step cap)

    def expand(self, source: str, variables: Mapping[str, Any], *, max_output: int,
               timeout: float | None = None, deadline: float | None = None,
               step_cap: int | None = None, escape: bool = True, url: bool = False) -> str:
        self.calls.append((threading.current_thread() is threading.main_thread(), step_cap))
        return super().expand(source, variables, max_output=max_output, timeout=timeout,
                              deadline=deadline, step_cap=step_cap, escape=escape, url=url)


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[tuple[Templates, RecordingExpander]]:
    store = await open_document_store(f"sqlite:///{tmp_path}/t.db", "litho")
    repo = TemplateRepository(store, version_cache_size=16)
    await repo.prepare()
    expander = RecordingExpander()
    limits = Limits(max_html_bytes=512 * 1024, max_dimension=5000,
                    max_variables_bytes=256 * 1024, max_output_bytes=2 * 1024 * 1024)
    try:
        yield Templates(repo, expander, limits, max_pattern_input=10_000,
                        expand_timeout=5.0), expander
    finally:
        await store.close()


async def make(templates: Templates, html: str) -> str:
    created = await templates.create("t1", Spec(name="t", html=html, width=100, height=100))
    return created.id


async def test_a_cheap_expansion_runs_on_the_loop(
    service: tuple[Templates, RecordingExpander],
) -> None:
    templates, expander = service
    template_id = await make(templates, "<p>{{ title | uppercase }}</p>")
    expansion = await templates.expand("t1", template_id, 0, '{"title": "hi"}')
    assert expansion.html == "<p>HI</p>"
    assert expander.calls == [(True, 20_000)]


async def test_an_expensive_one_is_stopped_and_finished_in_a_worker(
    service: tuple[Templates, RecordingExpander],
) -> None:
    templates, expander = service
    template_id = await make(
        templates, "{{ for a in xs }}{{ for b in xs }}{{ if a == b }}{{ a }},{{ end }}"
                   "{{ end }}{{ end }}")
    variables = json.dumps({"xs": list(range(90))})
    expansion = await templates.expand("t1", template_id, 0, variables)
    assert expansion.html == "".join(f"{i}," for i in range(90))
    assert expander.calls == [(True, 20_000), (False, None)]


async def test_large_inputs_go_straight_to_a_worker(
    service: tuple[Templates, RecordingExpander],
) -> None:
    templates, expander = service
    template_id = await make(templates, "{{ length(s) }}")
    expansion = await templates.expand("t1", template_id, 0, json.dumps({"s": "x" * 40_000}))
    assert expansion.html == "40000"
    assert expander.calls == [(False, None)]


async def test_the_budget_is_the_same_in_a_worker(
    service: tuple[Templates, RecordingExpander],
) -> None:
    templates, _ = service
    template_id = await make(templates, "{{ for x in xs }}{{ if big == big }}.{{ end }}{{ end }}")
    variables = json.dumps({"xs": list(range(5000)), "big": list(range(5000))})
    with pytest.raises(InvalidArgument) as caught:
        await templates.expand("t1", template_id, 0, variables)
    assert "LITHO_TEMPLATE_MAX_STEPS" in caught.value.message


async def test_patterns_are_compiled_in_a_worker_then_matched_inline(
    service: tuple[Templates, RecordingExpander],
) -> None:
    templates, expander = service
    created = await templates.create("t1", Spec(
        name="t", html="<p>{{ code }}</p>", width=100, height=100,
        variable_definitions=[{"name": "code", "type": "text",
                               "validation": {"pattern": "[A-Z]{3}"}}]))
    for _ in range(2):
        expansion = await templates.expand("t1", created.id, 0, '{"code": "ABC"}')
        assert expansion.html == "<p>ABC</p>"
    # The first expansion parsed the definitions (compiling the pattern) in a
    # worker; the second found them cached and stayed on the loop.
    assert expander.calls == [(False, None), (True, 20_000)]


async def test_definitions_saved_under_older_rules_are_named_at_render(
    service: tuple[Templates, RecordingExpander],
) -> None:
    templates, _ = service
    # Written straight to the store, as a template saved before patterns
    # became RE2 syntax would be: lookahead is no longer accepted.
    repo = templates._repo
    created = await repo.create("t1", Spec(
        name="t", html="<p>{{ code }}</p>", width=100, height=100,
        variable_definitions=[{"name": "code", "type": "text",
                               "validation": {"pattern": "(?=A)[A-Z]{3}"}}]))
    with pytest.raises(InvalidArgument) as caught:
        await templates.expand("t1", created.id, 0, '{"code": "ABC"}')
    assert "no longer valid; update the template" in caught.value.message
    assert caught.value.errors[0].field == "variables[0].validation.pattern"


async def test_heavy_pattern_matching_goes_to_a_worker_even_when_cached(
    service: tuple[Templates, RecordingExpander],
) -> None:
    # Variables × pattern program size over the inline bound (~3 ms of RE2's
    # worst case): matched in a worker, though the pattern is compiled.
    templates, expander = service
    created = await templates.create("t1", Spec(
        name="t", html="<p>{{ note }}</p>", width=100, height=100,
        variable_definitions=[{"name": "note", "type": "text",
                               "validation": {"pattern": ".{0,300}"}}]))  # 2,704 instructions
    await templates.expand("t1", created.id, 0, '{"note": "a"}')  # parses the definitions
    await templates.expand("t1", created.id, 0, '{"note": "a"}')
    await templates.expand("t1", created.id, 0, json.dumps({"note": "a" * 300, "pad": "b" * 200}))
    assert expander.calls == [(False, None), (True, 20_000), (False, None)]
