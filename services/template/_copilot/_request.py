"""The copilot request's prompt and history, checked before any work."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal, cast

from litho.errors import FieldError, InvalidArgument
from services.template._copilot._limits import CopilotLimits

Role = Literal["user", "assistant"]
_BAD = re.compile(r"[\x00\ud800-\udfff]")


@dataclass(frozen=True)
class Turn:
    role: Role
    content: str


def _refuse(field: str, problem: str) -> InvalidArgument:
    return InvalidArgument(f"{field}: {problem}", errors=[FieldError(field, problem)])


def _text(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise _refuse(field, "must be a string")
    if _BAD.search(value):
        raise _refuse(field, "is not valid text (it holds NUL or a lone surrogate)")
    return value


def check_prompt(prompt: Any, limits: CopilotLimits) -> str:
    """The prompt, or a 422 naming it: not a string, empty, too large, invalid text."""
    if isinstance(prompt, str) and len(prompt) > limits.max_prompt_bytes:
        # Counted before encoding anything: a 1 MB prompt costs nothing more.
        raise _refuse("prompt", f"is {len(prompt)} characters; at most "
                                f"{limits.max_prompt_bytes} bytes (LITHO_COPILOT_MAX_PROMPT_BYTES)")
    text = _text(prompt, "prompt")
    size = len(text.encode("utf-8"))
    if size > limits.max_prompt_bytes:
        raise _refuse("prompt", f"is {size} bytes; at most {limits.max_prompt_bytes} "
                                "(LITHO_COPILOT_MAX_PROMPT_BYTES)")
    if not text.strip():
        raise _refuse("prompt", "may not be empty: say what to change, e.g. "
                                "\"make a dark mode version\"")
    return text


def check_history(history: Any, limits: CopilotLimits) -> tuple[Turn, ...]:
    """``[{"role": "user"|"assistant", "content": str}, …]`` within the limits."""
    if history is None:
        return ()
    if not isinstance(history, list):
        raise _refuse("history", "must be an array of {role, content} objects")
    if len(history) > limits.max_history_entries:
        raise _refuse("history", f"has {len(history)} entries; at most "
                                 f"{limits.max_history_entries} "
                                 "(LITHO_COPILOT_MAX_HISTORY_ENTRIES)")
    turns: list[Turn] = []
    total = 0
    for i, entry in enumerate(history):
        field = f"history[{i}]"
        if not isinstance(entry, dict) or set(entry) != {"role", "content"}:
            raise _refuse(field, "must be an object with exactly role and content")
        role = entry["role"]
        if role not in ("user", "assistant"):
            raise _refuse(f"{field}.role", "must be user or assistant")
        if isinstance(entry["content"], str):
            total += len(entry["content"])
        if total > limits.max_history_bytes:
            raise _refuse(f"{field}.content", "the history passes "
                          f"{limits.max_history_bytes} bytes (LITHO_COPILOT_MAX_HISTORY_BYTES)")
        content = _text(entry["content"], f"{field}.content")
        total += len(content.encode("utf-8")) - len(content)
        if total > limits.max_history_bytes:
            raise _refuse(f"{field}.content", "the history passes "
                          f"{limits.max_history_bytes} bytes (LITHO_COPILOT_MAX_HISTORY_BYTES)")
        turns.append(Turn(cast(Role, role), content))
    return tuple(turns)
