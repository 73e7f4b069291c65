"""Runs every example in docs/template-language.md, so the reference cannot drift."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, fields, is_dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from litho.errors import InvalidArgument
from services.template._lang import Engine, list_functions
from services.template._lang._ast import Call
from services.template._lang._document import parse_document
from services.template._lang._functions import default_registry

DOC = Path(__file__).resolve().parents[2] / "docs" / "template-language.md"
_BLOCK = re.compile(r"^```litho-example\n(.*?)^```$", re.DOTALL | re.MULTILINE)
_KEYS = ("template", "variables", "output", "output-json", "error")
NOW = datetime(2024, 3, 20, 12, tzinfo=UTC)


@dataclass(frozen=True)
class Example:
    line: int
    fields: dict[str, str]

    @property
    def template(self) -> str:
        return self.fields["template"]


def _parse_block(text: str, line: int) -> Example:
    """``key: value`` lines; ``key: |`` takes the following lines indented by two spaces."""
    values: dict[str, str] = {}
    lines = text.split("\n")
    index = 0
    while index < len(lines):
        raw = lines[index]
        index += 1
        if not raw.strip():
            continue
        key, sep, value = raw.partition(": ")
        if not sep and raw.endswith(":"):
            key, value = raw[:-1], ""
        assert key in _KEYS, f"line {line}: unknown key in {raw!r}"
        if value == "|":
            block: list[str] = []
            while index < len(lines) and lines[index].startswith("  "):
                block.append(lines[index][2:])
                index += 1
            value = "\n".join(block)
        values[key] = value
    assert "template" in values, f"line {line}: example without a template"
    outcomes = [k for k in ("output", "output-json", "error") if k in values]
    assert len(outcomes) == 1, f"line {line}: need exactly one of output, output-json, error"
    return Example(line, values)


def load_examples() -> list[Example]:
    text = DOC.read_text(encoding="utf-8")
    return [
        _parse_block(match.group(1), text.count("\n", 0, match.start()) + 1)
        for match in _BLOCK.finditer(text)
    ]


EXAMPLES = load_examples()


def test_the_doc_has_examples() -> None:
    assert len(EXAMPLES) >= 50


@pytest.mark.parametrize("example", EXAMPLES, ids=[f"line{e.line}" for e in EXAMPLES])
def test_example(example: Example) -> None:
    engine = Engine(clock=lambda: NOW)
    variables = json.loads(example.fields.get("variables", "{}"))
    if "error" in example.fields:
        with pytest.raises(InvalidArgument) as caught:
            engine.compile(example.template).render(variables, max_output=1 << 20)
        messages = [caught.value.message, *(e.message for e in caught.value.errors)]
        assert any(example.fields["error"] in m for m in messages), messages
        return
    expected = (example.fields["output"] if "output" in example.fields
                else json.loads(example.fields["output-json"]))
    assert engine.compile(example.template).render(variables, max_output=1 << 20) == expected


def _calls(node: Any) -> set[str]:
    """Names of every function called anywhere in a parsed template."""
    found: set[str] = set()
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, Call):
            found.add(item.name)
        if is_dataclass(item):
            stack.extend(getattr(item, f.name) for f in fields(item))
        elif isinstance(item, tuple | list):
            stack.extend(item)
    return found


def test_every_function_has_an_example() -> None:
    used: set[str] = set()
    registry = default_registry()
    for example in EXAMPLES:
        if "error" in example.fields:
            continue
        document = parse_document(example.template, registry, Engine().limits)
        used |= _calls(document.nodes)
    missing = {info.name for info in list_functions()} - used
    assert not missing, f"functions without a working example in the doc: {sorted(missing)}"


def test_every_function_is_described() -> None:
    text = DOC.read_text(encoding="utf-8")
    for info in list_functions():
        assert re.search(rf"\b{re.escape(info.name)}\(", text), info.name
