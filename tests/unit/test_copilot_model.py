"""The copilot's model path: the request it builds and how strictly it reads replies."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from litho.errors import DeadlineExceeded, InvalidArgument, OutboundTooLarge, Unavailable
from litho.outbound import OutboundGuard
from services.template._copilot import (
    CopilotLimits,
    Fetch,
    ModelConfig,
    ModelPlanner,
    SetStyle,
    TemplateView,
    apply,
    parse_reply,
)
from tests.unit.test_copilot_apply import CARD


def fits_the_guard(guard: OutboundGuard) -> Fetch:
    """Checked by mypy only: the service passes ``OutboundGuard.fetch`` as the port."""
    return guard.fetch


@dataclass
class Reply:
    status: int
    body: bytes


@dataclass
class FakeModel:
    """Stands behind the port: records each call and answers with ``content``."""

    content: Any = ""
    status: int = 200
    raw: bytes | None = None
    delay: float = 0.0
    calls: list[dict[str, Any]] = field(default_factory=list)

    async def __call__(
        self, url: str, *, method: str = "GET", headers: Mapping[str, str] | None = None,
        body: bytes | None = None, max_bytes: int | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
        follow_redirects: bool = True, truncate: bool = False,
        secret_headers: Collection[str] = (),
    ) -> Reply:
        self.calls.append({"url": url, "method": method, "headers": dict(headers or {}),
                           "body": json.loads(body or b"{}"), "max_bytes": max_bytes,
                           "timeout": timeout, "secret_headers": list(secret_headers)})
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.raw is not None:
            return Reply(self.status, self.raw)
        content = self.content if isinstance(self.content, str) else json.dumps(self.content)
        envelope = {"choices": [{"message": {"role": "assistant", "content": content}}]}
        return Reply(self.status, json.dumps(envelope).encode())


CONFIG = ModelConfig("https://model.test/v1/chat/completions", "tiny", api_key="sk-test")
GOOD = {"steps": [
    {"description": "Make the title red",
     "operation": {"op": "set_style", "target": {"selector": "h1"},
                   "styles": {"color": "#dc2626"}}},
    {"id": "step-9", "description": "Nothing else to do", "operation": None},
]}


async def test_the_request_and_a_good_reply() -> None:
    fake = FakeModel(GOOD)
    steps = await ModelPlanner(fake, CONFIG).plan(
        "make the title red", CARD, history=[{"role": "user", "content": "hi"},
                                             {"role": "assistant", "content": "hello"}])
    assert [s.id for s in steps] == ["s1", "s2"]
    assert isinstance(steps[0].operation, SetStyle) and steps[1].operation is None
    assert steps[1].error is None
    html = apply(CARD, [steps[0].operation]).html
    assert "color: #dc2626" in html
    (call,) = fake.calls
    assert call["method"] == "POST" and call["url"] == CONFIG.url
    assert call["headers"]["Authorization"] == "Bearer sk-test"
    assert call["secret_headers"] == ["authorization"]
    assert call["max_bytes"] == CopilotLimits().max_reply_bytes
    messages = call["body"]["messages"]
    assert call["body"]["model"] == "tiny"
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert '"swap_palette"' in messages[0]["content"]  # the schema is in the system prompt
    assert "{{ title }}" in messages[-1]["content"]
    assert messages[-1]["content"].endswith("Request: make the title red")


async def test_the_template_is_cut_for_the_model() -> None:
    fake = FakeModel(GOOD)
    big = TemplateView("<p>" + "é" * 50_000 + "</p>", 10, 10)
    await ModelPlanner(fake, CONFIG, CopilotLimits(max_model_html_bytes=1001)).plan("x", big)
    user = fake.calls[0]["body"]["messages"][-1]["content"]
    # 1001 bytes: "<p>" and 499 two-byte characters; the half character is dropped.
    assert "é" * 499 in user and "é" * 500 not in user
    assert "cut at 1001 bytes" in user


@pytest.mark.parametrize(("content", "words"), [
    ("Sure! I made it red.", "did not answer with valid JSON"),
    ({"steps": [{"description": "x", "operation": {"op": "delete_everything"}}]},
     "steps[0].operation.op: is 'delete_everything'"),
    ({"steps": [{"description": "x", "operation": {
        "op": "set_style", "target": {"selector": "h1"},
        "styles": {"color": "red; background: url(http://evil)"}}}]},
     "steps[0].operation.styles.color"),
    ({"steps": [{"description": "x", "operation": {
        "op": "set_text", "target": {"selector": "h1 > script"}, "text": "x"}}]},
     "steps[0].operation.target.selector"),
    ({"steps": [{"description": "x", "operation": {
        "op": "add_element", "kind": "html", "props": {"html": "<script>"}}}]},
     "steps[0].operation.kind"),
    ({"steps": [{"description": "x", "operation": {"op": "set_text",
                                                   "target": {"selector": "h1"},
                                                   "text": "a\ud800"}}]},
     "/steps/0/operation/text: is not valid Unicode"),
    ({"steps": [{"description": "x"}]}, "exactly description and operation"),
    ({"steps": [{"description": "x", "operation": None, "html": "<b>"}]},
     "exactly description and operation"),
    ({"plan": []}, 'must be an object {"steps"'),
    ([1, 2], 'must be an object {"steps"'),
    ({"steps": [{"description": "x", "operation": None}] * 21}, "at most 20"),
])
async def test_bad_replies_become_error_steps(content: Any, words: str) -> None:
    steps = await ModelPlanner(FakeModel(content), CONFIG).plan("x", CARD)
    assert all(s.operation is None for s in steps)
    (step,) = steps
    assert step.error is not None and words in step.error, step.error
    assert step.description.startswith("The model's answer was refused")


async def test_one_bad_step_does_not_hide_the_good_ones() -> None:
    content = {"steps": [GOOD["steps"][0], {"description": "y",
                                            "operation": {"op": "nope"}}]}
    steps = await ModelPlanner(FakeModel(content), CONFIG).plan("x", CARD)
    assert steps[0].operation is not None and steps[0].error is None
    assert steps[1].operation is None and steps[1].error is not None
    assert [s.id for s in steps] == ["s1", "s2"]


def test_deep_nesting_and_broken_envelopes() -> None:
    deep = '{"steps": [' + '{"a": ' * 50 + "1" + "}" * 50 + "]}"
    (step,) = parse_reply(json.dumps({"choices": [{"message": {"content": deep}}]}).encode())
    assert step.error is not None and "LITHO_COPILOT_MAX_REPLY_DEPTH" in step.error
    deep_envelope = b'{"choices": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    (step,) = parse_reply(deep_envelope)
    assert step.error is not None and "not a JSON chat completion" in step.error
    for body in (b"\xff\xfe", b"null", b'{"choices": []}', b'{"choices": [{"message": {}}]}',
                 b'{"choices": [{"message": {"content": 5}}]}',
                 b'{"choices": [{"message": {"content": "\\ud800"}}]}'):
        (step,) = parse_reply(body)
        assert step.operation is None and step.error is not None, body
    fenced = "<think>red, so set_style</think>\n```json\n" + json.dumps(GOOD) + "\n```"
    steps = parse_reply(json.dumps({"choices": [{"message": {"content": fenced}}]}).encode())
    assert steps[0].operation is not None
    (step,) = parse_reply(b"x" * 100, CopilotLimits(max_reply_bytes=10))
    assert step.error is not None and "at most 10" in step.error


async def test_transport_failures_are_errors_not_steps() -> None:
    with pytest.raises(Unavailable, match="HTTP 500"):
        await ModelPlanner(FakeModel(GOOD, status=500), CONFIG).plan("x", CARD)
    slow = ModelPlanner(FakeModel(GOOD, delay=1.0), CONFIG, CopilotLimits(model_timeout=0.05))
    with pytest.raises(DeadlineExceeded, match="LITHO_COPILOT_MODEL_TIMEOUT"):
        await slow.plan("x", CARD)

    async def too_large(url: str, **_: Any) -> Reply:
        raise OutboundTooLarge("too large")

    (step,) = await ModelPlanner(too_large, CONFIG).plan("x", CARD)
    assert step.error is not None and "LITHO_COPILOT_MAX_REPLY_BYTES" in step.error


async def test_the_prompt_is_checked_before_any_call() -> None:
    fake = FakeModel(GOOD)
    with pytest.raises(InvalidArgument, match="at most 4096"):
        await ModelPlanner(fake, CONFIG).plan("a" * 1024 * 1024, CARD)
    with pytest.raises(InvalidArgument, match="lone surrogate"):
        await ModelPlanner(fake, CONFIG).plan("x", CARD,
                                              history=[{"role": "user", "content": "\udfff"}])
    assert fake.calls == []
