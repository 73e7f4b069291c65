"""A language model behind an OpenAI-compatible chat-completions endpoint.

The model is told the vocabulary (as JSON Schema) and shown the template;
its reply is read as strictly as any client input. A reply that is not
JSON, is too deep or too large, names an unknown operation or has an
invalid field becomes an *error step* (``operation`` None, ``error`` set)
that can never be applied; valid steps in the same reply stay. The HTTP call
goes through an injected :class:`Fetch` port: the service passes
``OutboundGuard.fetch`` (``litho.outbound``), unit tests a fake.

Errors: a model that cannot be reached raises what the port raises
(``OutboundError``, ``OutboundDenied``); a non-2xx answer is
``Unavailable``; no answer within ``model_timeout`` is ``DeadlineExceeded``.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from litho import jsonlimits
from litho.errors import DeadlineExceeded, OutboundTooLarge, Unavailable
from services.template._copilot._apply import TemplateView
from services.template._copilot._limits import CopilotLimits
from services.template._copilot._request import Turn, check_history, check_prompt
from services.template._copilot._schema import vocabulary_schema
from services.template._copilot._vocabulary import (
    Step,
    VocabularyError,
    operation_from_json,
    text_field,
)


class FetchReply(Protocol):
    @property
    def status(self) -> int: ...

    @property
    def body(self) -> bytes: ...


class Fetch(Protocol):
    """The shape of ``OutboundGuard.fetch`` that the copilot uses."""

    async def __call__(
        self, url: str, *, method: str = ..., headers: Mapping[str, str] | None = ...,
        body: bytes | None = ..., max_bytes: int | None = ...,
        timeout: float | None = ...,  # noqa: ASYNC109
        follow_redirects: bool = ..., truncate: bool = ...,
        secret_headers: Collection[str] = ...,
    ) -> FetchReply: ...


@dataclass(frozen=True)
class ModelConfig:
    """``LITHO_COPILOT_URL`` (the full chat-completions URL), ``…_MODEL``, ``…_API_KEY``."""

    url: str
    model: str
    api_key: str | None = None
    temperature: float = 0.0
    #: Ask for ``response_format: json_object`` (not every server supports it).
    json_mode: bool = False


SYSTEM_PROMPT = """\
You edit one HTML image template of Litho. Reply with ONLY a JSON object \
{{"steps": [{{"description": "...", "operation": {{...}}}}]}} and nothing else, \
following this JSON Schema:
{schema}
Rules: use only these operations; each description says in one sentence what the step \
does; targets use only the selector forms in the schema (index picks among matches, 0 is \
the first); never write HTML; keep every {{{{ ... }}}} template tag as it is; to only \
explain or ask, give a step whose operation is null. At most {max_steps} steps."""


def _truncate(text: str, max_bytes: int) -> tuple[str, bool]:
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= max_bytes:
        return text, False
    return data[:max_bytes].decode("utf-8", "ignore"), True


def build_messages(prompt: str, template: TemplateView, history: tuple[Turn, ...],
                   limits: CopilotLimits) -> list[dict[str, str]]:
    schema = json.dumps(vocabulary_schema(limits), separators=(",", ":"))
    html, cut = _truncate(template.html, limits.max_model_html_bytes)
    note = f"\n(the HTML is cut at {limits.max_model_html_bytes} bytes)" if cut else ""
    user = (f"Template \"{template.name}\", canvas {template.width}x{template.height} px. "
            f"Its HTML:\n```html\n{html}\n```{note}\n\nRequest: {prompt}")
    return [
        {"role": "system", "content": SYSTEM_PROMPT.format(schema=schema,
                                                           max_steps=limits.max_steps)},
        *({"role": t.role, "content": t.content} for t in history),
        {"role": "user", "content": user},
    ]


class ModelPlanner:
    def __init__(self, fetch: Fetch, config: ModelConfig,
                 limits: CopilotLimits | None = None) -> None:
        self._fetch = fetch
        self._config = config
        self._limits = limits or CopilotLimits()

    def request_body(self, prompt: str, template: TemplateView,
                     history: tuple[Turn, ...]) -> bytes:
        payload: dict[str, Any] = {
            "model": self._config.model,
            "messages": build_messages(prompt, template, history, self._limits),
            "temperature": self._config.temperature,
        }
        if self._config.json_mode:
            payload["response_format"] = {"type": "json_object"}
        # ASCII JSON: whatever the template holds, the body is valid UTF-8.
        return json.dumps(payload).encode("ascii")

    async def plan(self, prompt: object, template: TemplateView, *,
                   history: object = None) -> list[Step]:
        limits = self._limits
        text = check_prompt(prompt, limits)
        turns = check_history(history, limits)
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._config.api_key:
            headers["Authorization"] = f"Bearer {self._config.api_key}"
        try:
            async with asyncio.timeout(limits.model_timeout):
                reply = await self._fetch(
                    self._config.url, method="POST", headers=headers,
                    body=self.request_body(text, template, turns),
                    max_bytes=limits.max_reply_bytes, timeout=limits.model_timeout,
                    follow_redirects=False, secret_headers=("authorization",))
        except TimeoutError as exc:
            raise DeadlineExceeded(
                f"the copilot model did not answer within {limits.model_timeout:g}s "
                "(LITHO_COPILOT_MODEL_TIMEOUT)") from exc
        except OutboundTooLarge:
            return [_error(1, f"the model's reply passed {limits.max_reply_bytes} bytes "
                              "(LITHO_COPILOT_MAX_REPLY_BYTES)")]
        if not 200 <= reply.status < 300:
            raise Unavailable(f"the copilot model answered HTTP {reply.status}")
        return parse_reply(reply.body, limits)


def _error(n: int, problem: str) -> Step:
    return Step(f"s{n}", f"The model's answer was refused: {problem}", None, problem)


_THINKING = re.compile(r"^\s*<think>.*?</think>", re.DOTALL)
_FENCE = re.compile(r"^\s*```(?:json)?\s*\n?(.*?)\n?```\s*$", re.DOTALL | re.IGNORECASE)


def parse_reply(body: bytes, limits: CopilotLimits | None = None) -> list[Step]:
    """Steps from a chat-completions response body; never raises for bad content."""
    limits = limits or CopilotLimits()
    if len(body) > limits.max_reply_bytes:
        return [_error(1, f"the reply is {len(body)} bytes; at most {limits.max_reply_bytes}")]
    json_limits = jsonlimits.JsonLimits(max_depth=limits.max_reply_depth,
                                        depth_setting="LITHO_COPILOT_MAX_REPLY_DEPTH")
    try:
        envelope = jsonlimits.loads(body, json_limits)
    except (ValueError, UnicodeDecodeError) as exc:
        return [_error(1, f"the reply is not a JSON chat completion ({_short(exc)})")]
    try:
        content = envelope["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return [_error(1, "the reply has no choices[0].message.content")]
    if not isinstance(content, str):
        return [_error(1, "the reply's message content is not text")]
    # Reasoning models may think aloud first; only what follows is the answer.
    content = _THINKING.sub("", content, count=1)
    fenced = _FENCE.match(content)
    if fenced:
        content = fenced.group(1)
    try:
        answer = jsonlimits.loads(content, json_limits)
    except ValueError as exc:
        return [_error(1, f"the model did not answer with valid JSON ({_short(exc)})")]
    return steps_from_answer(answer, limits)


def _short(exc: Exception) -> str:
    return str(exc)[:200]


def steps_from_answer(answer: Any, limits: CopilotLimits) -> list[Step]:
    if not isinstance(answer, dict) or set(answer) != {"steps"} or \
            not isinstance(answer["steps"], list):
        return [_error(1, 'the answer must be an object {"steps": [...]} and nothing else')]
    items = answer["steps"]
    if len(items) > limits.max_steps:
        return [_error(1, f"the model proposed {len(items)} steps; at most {limits.max_steps} "
                          "(LITHO_COPILOT_MAX_STEPS)")]
    if not items:
        return [Step("s1", "The model proposed no change.")]
    steps: list[Step] = []
    for i, item in enumerate(items):
        path = f"steps[{i}]"
        try:
            # An "id" is tolerated (models like to number steps) and replaced.
            if not isinstance(item, dict) or not {"description", "operation"} <= set(item) \
                    or not set(item) <= {"id", "description", "operation"}:
                raise VocabularyError(path, "must be an object with exactly description and "
                                            "operation (and optionally id)")
            description = text_field(item["description"], f"{path}.description",
                                  max_chars=1000, multiline=True)
            operation = None if item["operation"] is None else \
                operation_from_json(item["operation"], f"{path}.operation", limits)
        except VocabularyError as exc:
            steps.append(_error(i + 1, exc.message))
            continue
        steps.append(Step(f"s{i + 1}", description, operation))
    return steps
