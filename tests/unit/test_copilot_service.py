"""The copilot as the template service runs it, with a language model: a
local OpenAI-compatible chat-completions server, reached through the real
outbound guard (its loopback port allowed by configuration, as an operator
would), templates and plans in SQLite. A reply outside the vocabulary is an
error step that can never be applied; the model's address is denied unless
allowed."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from litho.config import OutboundSettings
from litho.docstore import open_document_store
from litho.errors import Conflict, InvalidArgument, OutboundDenied, Unavailable
from litho.jsonlimits import JsonLimits
from litho.outbound import OutboundGuard
from litho.sandbox import Sandbox
from services.template._copilot import CopilotLimits, ModelConfig, ModelPlanner
from services.template._copilot_plans import CopilotPlans
from services.template._copilots import MODEL, Copilot
from services.template._lang import Engine, LangExpander
from services.template._model import Limits, Spec
from services.template._service import Templates
from services.template._store import TemplateRepository

HTML = ('<body style="margin: 0; background: #ffffff">'
        '<h1 style="color: #111827">{{ title }}</h1>{{ if x }}<p>x</p>{{ end }}</body>')


@dataclass
class ChatServer:
    """Answers every chat completion with ``content``, counting the requests."""

    content: str = ""
    status: int = 200
    requests: list[dict[str, Any]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(await request.json())
        if self.status != 200:
            return web.json_response({"error": "down"}, status=self.status)
        return web.json_response({"choices": [{"message": {"role": "assistant",
                                                           "content": self.content}}]})


@dataclass
class Rig:
    copilot: Copilot
    templates: Templates
    server: ChatServer
    template_id: str


async def _rig(tmp_path: Path, *, allow: bool, rules: bool = False,
               work_timeout: float = 30.0) -> AsyncIterator[Rig]:
    server = ChatServer()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", server.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    store = await open_document_store(f"sqlite:///{tmp_path}/t.db", "litho")
    repo = TemplateRepository(store, version_cache_size=0)
    await repo.prepare()
    templates = Templates(repo, LangExpander(Engine()), Limits(
        max_html_bytes=512 * 1024, max_dimension=5000, max_variables_bytes=64 * 1024,
        max_output_bytes=1024 * 1024), max_pattern_input=10_000, expand_timeout=5.0)
    limits = CopilotLimits()
    plans = CopilotPlans(store, ttl=3600, max_per_template=3, limits=limits)
    await plans.prepare()
    guard = OutboundGuard(OutboundSettings(allow=f"127.0.0.1:{port}" if allow else ""))
    await guard.start()
    model = ModelPlanner(guard.fetch, ModelConfig(
        url=f"http://127.0.0.1:{port}/v1/chat/completions", model="test-model",
        api_key="sk-test"), limits)
    work = Sandbox(workers=1, memory_bytes=512 * 1024 * 1024, timeout=work_timeout, max_waiting=4)
    work.start()
    copilot = Copilot(templates, plans, limits, work, json_limits=JsonLimits(),
                      model=None if rules else model, work_timeout=work_timeout)
    made = await templates.create("tenant-a", Spec(name="card", html=HTML, width=1200,
                                                   height=630))
    try:
        yield Rig(copilot, templates, server, made.id)
    finally:
        work.close()
        await guard.close()
        await store.close()
        await runner.cleanup()


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async for r in _rig(tmp_path, allow=True):
        yield r


def reply(*steps: dict[str, Any]) -> str:
    return json.dumps({"steps": list(steps)})


DARK = {"description": "Dark background",
        "operation": {"op": "set_style", "target": {"selector": "body"},
                      "styles": {"background": "#0f1115"}}}


async def test_a_model_plan_is_kept_and_applied(rig: Rig) -> None:
    rig.server.content = reply(DARK)
    planned = await rig.copilot.plan("tenant-a", rig.template_id, "dark please",
                                     json.dumps([{"role": "user", "content": "hi"}]))
    assert planned.planner == MODEL
    assert [s.error for s in planned.steps] == [None]
    sent = rig.server.requests[-1]
    assert sent["model"] == "test-model"
    assert [m["role"] for m in sent["messages"]] == ["system", "user", "user"]
    assert "{{ title }}" in sent["messages"][-1]["content"]  # the template, shown
    result = await rig.copilot.apply("tenant-a", rig.template_id,
                                     [f"{planned.plan_id}.s1"])
    assert result.template.version == 2
    assert "background: #0f1115" in result.template.html
    assert "{{ if x }}<p>x</p>{{ end }}" in result.template.html


@pytest.mark.parametrize("content", [
    "Sure! I made it dark.",                                     # not JSON
    reply({"description": "boom", "operation": {"op": "explode"}}),  # unknown op
    reply({"description": "html", "operation": {
        "op": "add_element", "kind": "text", "props": {"html": "<script>x</script>"}}}),
])
async def test_a_reply_outside_the_vocabulary_is_an_error_step_never_applied(
        rig: Rig, content: str) -> None:
    rig.server.content = content
    planned = await rig.copilot.plan("tenant-a", rig.template_id, "do something", "")
    assert planned.steps and all(s.operation is None and s.error for s in planned.steps)
    with pytest.raises(InvalidArgument, match="no operation"):
        await rig.copilot.apply("tenant-a", rig.template_id,
                                [f"{planned.plan_id}.{planned.steps[0].id}"])
    assert (await rig.templates.get("tenant-a", rig.template_id)).version == 1


async def test_good_steps_beside_a_bad_one_still_apply(rig: Rig) -> None:
    rig.server.content = reply(DARK, {"description": "?", "operation": {"op": "nope"}})
    planned = await rig.copilot.plan("tenant-a", rig.template_id, "dark", "")
    assert [bool(s.error) for s in planned.steps] == [False, True]
    result = await rig.copilot.apply("tenant-a", rig.template_id, [f"{planned.plan_id}.s1"])
    assert result.template.version == 2


async def test_a_failing_model_is_unavailable_and_plans_nothing(rig: Rig) -> None:
    rig.server.status = 500
    with pytest.raises(Unavailable, match="500"):
        await rig.copilot.plan("tenant-a", rig.template_id, "dark", "")


async def test_a_plan_belongs_to_its_version_and_its_template(rig: Rig) -> None:
    rig.server.content = reply(DARK)
    planned = await rig.copilot.plan("tenant-a", rig.template_id, "dark", "")
    await rig.templates.update("tenant-a", rig.template_id, Spec(name="renamed"))
    with pytest.raises(Conflict, match="planned for version 1"):
        await rig.copilot.apply("tenant-a", rig.template_id, [f"{planned.plan_id}.s1"])
    other = await rig.templates.create("tenant-a", Spec(name="b", html=HTML, width=100,
                                                        height=100))
    with pytest.raises(InvalidArgument, match="no copilot plan"):
        await rig.copilot.preview("tenant-a", other.id, [f"{planned.plan_id}.s1"])


async def test_a_template_keeps_its_newest_plans_only(rig: Rig) -> None:
    rig.server.content = reply(DARK)
    plans = [await rig.copilot.plan("tenant-a", rig.template_id, "dark", "")
             for _ in range(4)]  # three are kept
    with pytest.raises(InvalidArgument, match="no copilot plan"):
        await rig.copilot.preview("tenant-a", rig.template_id, [f"{plans[0].plan_id}.s1"])
    for kept in plans[1:]:
        await rig.copilot.preview("tenant-a", rig.template_id, [f"{kept.plan_id}.s1"])


async def test_the_models_address_is_denied_unless_allowed(tmp_path: Path) -> None:
    async for rig in _rig(tmp_path, allow=False):
        rig.server.content = reply(DARK)
        with pytest.raises(OutboundDenied):
            await rig.copilot.plan("tenant-a", rig.template_id, "dark", "")
        assert rig.server.requests == []


async def test_a_plan_applies_once_even_when_the_template_does_not_change(rig: Rig) -> None:
    rig.server.content = reply({"description": "a copy", "operation": {
        "op": "duplicate_template", "name": "copy", "operations": [DARK["operation"]]}})
    planned = await rig.copilot.plan("tenant-a", rig.template_id, "a dark copy", "")
    first = await rig.copilot.apply("tenant-a", rig.template_id, [f"{planned.plan_id}.s1"])
    assert len(first.created) == 1 and first.template.version == 1
    with pytest.raises(Conflict, match="applied already"):
        await rig.copilot.apply("tenant-a", rig.template_id, [f"{planned.plan_id}.s1"])


async def test_nested_operations_count_against_one_budget(rig: Rig) -> None:
    copy = {"description": "a copy", "operation": {
        "op": "duplicate_template", "name": "copy",
        "operations": [DARK["operation"]] * 15}}
    rig.server.content = reply(copy, copy, copy)  # 3 + 45 operations in all
    planned = await rig.copilot.plan("tenant-a", rig.template_id, "copies", "")
    with pytest.raises(InvalidArgument, match="48 operations in all"):
        await rig.copilot.preview("tenant-a", rig.template_id,
                                  [f"{planned.plan_id}.{s.id}" for s in planned.steps])


async def test_a_template_that_makes_the_parser_crawl_is_stopped_in_its_worker(
        tmp_path: Path) -> None:
    """The standard library's HTML parser is quadratic in unclosed start tags:
    the work is killed at its time limit, a 422, and the next call works."""
    async for rig in _rig(tmp_path, allow=True, rules=True, work_timeout=1.0):
        slow = await rig.templates.create("tenant-a", Spec(
            name="slow", html="<body>" + "<a " * 40_000, width=100, height=100))
        started = time.monotonic()
        with pytest.raises(InvalidArgument, match="LITHO_COPILOT_WORK_TIMEOUT"):
            await rig.copilot.plan("tenant-a", slow.id, "make a dark mode version", "")
        assert time.monotonic() - started < 15
        planned = await rig.copilot.plan("tenant-a", rig.template_id,
                                         "make a dark mode version", "")
        assert any(s.operation is not None for s in planned.steps)
