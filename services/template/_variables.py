"""Variable definitions on a template: types, defaults and validation rules.

A definition is JSON such as::

    {"name": "title", "type": "text", "defaultValue": "Hello",
     "description": "The headline", "validation": {"required": true, "maxLength": 40}}

``parse_definitions`` checks the definitions themselves (when a template is
saved); ``apply_definitions`` checks the variables of one render against them
and fills in defaults. Both report every problem at once.

``pattern`` is a regular expression written by the template author, matched
with RE2 (``_patterns``) in time linear in the value, so no pattern can
backtrack; what RE2 cannot express is refused when the definition is saved.
A value longer than ``max_pattern_input`` characters
(``LITHO_TEMPLATE_MAX_PATTERN_INPUT``) is refused rather than matched.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from litho import jsonlimits
from litho.errors import FieldError, InvalidArgument
from services.template._lang._values import type_name
from services.template._patterns import Pattern, PatternError, compile_pattern

TYPES = ("text", "number", "boolean", "color", "image", "date", "list", "object")
#: Characters of a value a pattern is run on, at most.
DEFAULT_MAX_PATTERN_INPUT = 10_000
PATTERN_INPUT_SETTING = "LITHO_TEMPLATE_MAX_PATTERN_INPUT"
#: Characters × pattern instructions matched in one render, at most: ~3 ns
#: each at worst, so the default bounds pattern matching to ~0.3 s.
DEFAULT_MAX_PATTERN_WORK = 100_000_000
PATTERN_WORK_SETTING = "LITHO_TEMPLATE_MAX_PATTERN_WORK"
MAX_PATTERN_LENGTH = 500
MAX_DEFINITIONS = 200

_NAME = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*", re.ASCII)
_RESERVED = frozenset({"true", "false", "null", "and", "or", "not", "in", "loop"})
_COLOR = re.compile(
    r"\#(?:[0-9a-f]{3}|[0-9a-f]{4}|[0-9a-f]{6}|[0-9a-f]{8})"
    r"|(?:rgba?|hsla?)\([0-9a-z.%,\s/+-]{1,60}\)"
    r"|[a-z]{1,30}",
    re.ASCII | re.IGNORECASE,
)
_DEFINITION_KEYS = frozenset({"name", "type", "defaultValue", "description", "validation"})
_RULE_KEYS = ("required", "minLength", "maxLength", "min", "max", "pattern", "enum")
_TEXT_TYPES = frozenset({"text", "color", "image", "date"})
_LENGTH_TYPES = _TEXT_TYPES | {"list"}


@dataclass(frozen=True)
class Validation:
    required: bool = False
    min_length: int | None = None
    max_length: int | None = None
    min: int | float | None = None
    max: int | float | None = None
    pattern: Pattern | None = None
    enum: tuple[Any, ...] | None = None


@dataclass(frozen=True)
class VariableDefinition:
    name: str
    type: str
    default_value: Any = None
    description: str = ""
    validation: Validation = field(default_factory=Validation)

    def to_json(self) -> dict[str, Any]:
        rules: dict[str, Any] = {}
        v = self.validation
        for key, value in (("required", v.required or None), ("minLength", v.min_length),
                           ("maxLength", v.max_length), ("min", v.min), ("max", v.max),
                           ("pattern", v.pattern.source if v.pattern else None),
                           ("enum", list(v.enum) if v.enum is not None else None)):
            if value is not None:
                rules[key] = value
        out: dict[str, Any] = {"name": self.name, "type": self.type}
        if self.default_value is not None:
            out["defaultValue"] = self.default_value
        if self.description:
            out["description"] = self.description
        if rules:
            out["validation"] = rules
        return out


def parse_definitions(
    definitions: Any, *, field_name: str = "variables"
) -> list[VariableDefinition]:
    """Validated definitions; raises InvalidArgument naming each bad field by path."""
    errors: list[FieldError] = []
    if not isinstance(definitions, list):
        raise InvalidArgument("variable definitions must be an array",
                              errors=[FieldError(field_name, "must be an array")])
    if len(definitions) > MAX_DEFINITIONS:
        raise InvalidArgument("too many variable definitions", errors=[FieldError(
            field_name, f"must have at most {MAX_DEFINITIONS} definitions")])
    parsed: list[VariableDefinition] = []
    seen: set[str] = set()
    for index, raw in enumerate(definitions):
        path = f"{field_name}[{index}]"
        definition = _definition(raw, path, errors)
        if definition is None:
            continue
        if definition.name in seen:
            errors.append(FieldError(f"{path}.name", f"'{definition.name}' is defined twice"))
        seen.add(definition.name)
        parsed.append(definition)
    if errors:
        raise InvalidArgument("the variable definitions are invalid", errors=errors)
    return parsed


def _definition(raw: Any, path: str, errors: list[FieldError]) -> VariableDefinition | None:
    if not isinstance(raw, dict):
        errors.append(FieldError(path, "must be an object"))
        return None
    before = len(errors)
    for key in raw:
        if key not in _DEFINITION_KEYS:
            errors.append(FieldError(f"{path}.{key}", "unknown property; expected one of "
                                                      + ", ".join(sorted(_DEFINITION_KEYS))))
    name = raw.get("name")
    if not isinstance(name, str) or _NAME.fullmatch(name) is None:
        errors.append(FieldError(f"{path}.name", "must be a name usable in a template: letters, "
                                                 "digits, _ or $, not starting with a digit"))
    elif name in _RESERVED:
        errors.append(FieldError(f"{path}.name", f"'{name}' is reserved by the template "
                                                 "language"))
    kind = raw.get("type")
    if kind not in TYPES:
        errors.append(FieldError(f"{path}.type", f"must be one of {', '.join(TYPES)}"))
    description = raw.get("description", "")
    if not isinstance(description, str):
        errors.append(FieldError(f"{path}.description", "must be text"))
    if len(errors) > before:
        return None
    name, kind = str(name), str(kind)
    validation = _validation(raw.get("validation"), kind, f"{path}.validation", errors)
    definition = VariableDefinition(name, kind, None, description, validation or Validation())
    default = raw.get("defaultValue")
    if default is not None and validation is not None:
        problems = _problems(definition, default, math.inf)
        errors.extend(FieldError(f"{path}.defaultValue", p) for p in problems)
    if len(errors) > before:
        return None
    return VariableDefinition(name, kind, default, description, definition.validation)


def _validation(raw: Any, kind: str, path: str, errors: list[FieldError]) -> Validation | None:
    if raw is None:
        return Validation()
    if not isinstance(raw, dict):
        errors.append(FieldError(path, "must be an object"))
        return None
    before = len(errors)
    for key in raw:
        if key not in _RULE_KEYS:
            errors.append(FieldError(f"{path}.{key}", "unknown rule; expected one of "
                                                      + ", ".join(_RULE_KEYS)))
    required = raw.get("required", False)
    if not isinstance(required, bool):
        errors.append(FieldError(f"{path}.required", "must be true or false"))
    lengths: dict[str, int | None] = {}
    for key in ("minLength", "maxLength"):
        value = raw.get(key)
        lengths[key] = None
        if value is None:
            continue
        if kind not in _LENGTH_TYPES:
            errors.append(FieldError(f"{path}.{key}", f"does not apply to {kind} variables"))
        elif not _is_int(value) or value < 0:
            errors.append(FieldError(f"{path}.{key}", "must be a whole number, 0 or more"))
        else:
            lengths[key] = value
    bounds: dict[str, int | float | None] = {}
    for key in ("min", "max"):
        value = raw.get(key)
        bounds[key] = None
        if value is None:
            continue
        if kind != "number":
            errors.append(FieldError(f"{path}.{key}", "applies only to number variables"))
        elif not _is_number(value):
            errors.append(FieldError(f"{path}.{key}", "must be a number"))
        else:
            bounds[key] = value
    if _ordered(lengths["minLength"], lengths["maxLength"]) is False:
        errors.append(FieldError(f"{path}.minLength", "must not be greater than maxLength"))
    if _ordered(bounds["min"], bounds["max"]) is False:
        errors.append(FieldError(f"{path}.min", "must not be greater than max"))
    pattern = _pattern(raw.get("pattern"), kind, f"{path}.pattern", errors)
    enum = raw.get("enum")
    if enum is not None and (not isinstance(enum, list) or not enum):
        errors.append(FieldError(f"{path}.enum", "must be a non-empty array"))
    elif enum is not None:
        for index, option in enumerate(enum):
            problem = _type_problem(kind, option)
            if problem is not None:
                errors.append(FieldError(f"{path}.enum[{index}]", problem))
    if len(errors) > before:
        return None
    return Validation(required, lengths["minLength"], lengths["maxLength"], bounds["min"],
                      bounds["max"], pattern, tuple(enum) if enum is not None else None)


def _ordered(low: int | float | None, high: int | float | None) -> bool | None:
    return None if low is None or high is None else low <= high


def _pattern(raw: Any, kind: str, path: str, errors: list[FieldError]) -> Pattern | None:
    if raw is None:
        return None
    if kind not in _TEXT_TYPES:
        errors.append(FieldError(path, f"does not apply to {kind} variables"))
        return None
    if not isinstance(raw, str) or not raw:
        errors.append(FieldError(path, "must be a regular expression"))
        return None
    if len(raw) > MAX_PATTERN_LENGTH:
        errors.append(FieldError(path, f"must be at most {MAX_PATTERN_LENGTH} characters"))
        return None
    try:
        return compile_pattern(raw)
    except PatternError as exc:
        errors.append(FieldError(path, f"is not a regular expression RE2 accepts: {exc} "
                                       "(backreferences and lookaround are not supported)"))
        return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value))


def _is_image_url(value: str) -> bool:
    if len(value) > 2048 or any(c.isspace() for c in value):
        return False
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _is_date(value: Any) -> bool:
    if _is_number(value):
        return True
    if not isinstance(value, str) or len(value) > 64:
        return False
    try:
        datetime.fromisoformat(value.strip())
    except ValueError:
        return False
    return True


def _type_problem(kind: str, value: Any) -> str | None:
    if kind == "text":
        ok = isinstance(value, str)
        wanted = "must be text"
    elif kind == "number":
        ok, wanted = _is_number(value), "must be a number"
    elif kind == "boolean":
        ok, wanted = isinstance(value, bool), "must be true or false"
    elif kind == "color":
        ok = isinstance(value, str) and _COLOR.fullmatch(value.strip()) is not None
        wanted = "must be a color: #rgb, #rrggbb, #rrggbbaa, rgb(…), rgba(…), hsl(…) or a name"
    elif kind == "image":
        ok = isinstance(value, str) and _is_image_url(value)
        wanted = "must be an http(s) URL of an image"
    elif kind == "date":
        ok = _is_date(value)
        wanted = "must be an ISO-8601 date such as 2024-03-15 or a unix timestamp"
    elif kind == "list":
        ok, wanted = isinstance(value, list), "must be an array"
    else:
        ok, wanted = isinstance(value, dict), "must be an object"
    return None if ok else wanted


class _Work:
    """What is left of one render's pattern-matching budget."""

    __slots__ = ("left", "limit")

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.left = limit


def _problems(definition: VariableDefinition, value: Any, max_pattern_input: float,
              work: _Work | None = None) -> list[str]:
    """What is wrong with a present (non-null) value; empty when nothing is."""
    problem = _type_problem(definition.type, value)
    if problem is not None:
        return [problem]
    rules = definition.validation
    problems: list[str] = []
    if isinstance(value, str | list):
        unit = "items" if isinstance(value, list) else "characters"
        if rules.required and len(value) == 0:
            problems.append("is required")
        if rules.min_length is not None and len(value) < rules.min_length:
            problems.append(f"must be at least {rules.min_length} {unit}")
        if rules.max_length is not None and len(value) > rules.max_length:
            problems.append(f"must be at most {rules.max_length} {unit}")
    if _is_number(value):
        if rules.min is not None and value < rules.min:
            problems.append(f"must be at least {rules.min}")
        if rules.max is not None and value > rules.max:
            problems.append(f"must be at most {rules.max}")
    if rules.pattern is not None and isinstance(value, str):
        cost = len(value) * rules.pattern.size
        if len(value) > max_pattern_input:
            problems.append(f"is longer than the {int(max_pattern_input)} characters a pattern "
                            f"is checked against (setting {PATTERN_INPUT_SETTING})")
        elif work is not None and cost > work.left:
            problems.append(f"needs more pattern matching than one render may do: its "
                            f"{len(value)} characters against a pattern of "
                            f"{rules.pattern.size} instructions (limit {int(work.limit)} "
                            f"characters × instructions per render, setting "
                            f"{PATTERN_WORK_SETTING})")
        else:
            if work is not None:
                work.left -= cost
            if not rules.pattern.fullmatch(value):
                problems.append(f"must match the pattern {rules.pattern.source}")
    if rules.enum is not None and not any(_same(value, option) for option in rules.enum):
        shown = ", ".join(repr(option) if isinstance(option, str) else str(option)
                          for option in rules.enum[:10])
        problems.append(f"must be one of {shown}{', …' if len(rules.enum) > 10 else ''}")
    return problems


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return bool(a == b)


def apply_definitions(
    definitions: list[VariableDefinition],
    variables: Mapping[str, Any],
    *,
    max_pattern_input: int = DEFAULT_MAX_PATTERN_INPUT,
    max_pattern_work: int = DEFAULT_MAX_PATTERN_WORK,
) -> dict[str, Any]:
    """The variables with defaults filled in; raises InvalidArgument listing every
    offending variable (the field is the variable's name). Variables without a
    definition pass through untouched."""
    result = dict(variables)
    errors: list[FieldError] = []
    work = _Work(max_pattern_work)
    for definition in definitions:
        value = variables.get(definition.name)
        if value is None:
            if definition.default_value is not None:
                result[definition.name] = definition.default_value
            elif definition.validation.required:
                errors.append(FieldError(definition.name, "is required"))
            continue
        errors.extend(FieldError(definition.name, problem)
                      for problem in _problems(definition, value, max_pattern_input, work))
    if errors:
        raise InvalidArgument("some variables are invalid", errors=errors)
    return result


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off", ""}


def coerce_strings(
    definitions: list[VariableDefinition], variables: Mapping[str, Any],
    json_limits: jsonlimits.JsonLimits,
) -> dict[str, Any]:
    """Variables that arrived as text (a URL query), converted to their defined
    type where the text reads as one; anything else is left for
    :func:`apply_definitions` to report. Lists and objects are parsed under
    the same limits as any JSON the service receives, and a value over one
    is refused naming the variable."""
    result = dict(variables)
    for definition in definitions:
        value = result.get(definition.name)
        if not isinstance(value, str):
            continue
        text = value.strip()
        if definition.type == "number":
            if len(text) > json_limits.max_number_chars:
                raise InvalidArgument("some variables are invalid", errors=[FieldError(
                    definition.name, f"is a number longer than {json_limits.max_number_chars} "
                                     f"characters (setting {json_limits.number_setting})")])
            try:
                number = float(text)
            except ValueError:
                continue
            if math.isfinite(number):
                exact_int = number.is_integer() and text.lstrip("+-").isdigit()
                result[definition.name] = int(text) if exact_int else number
        elif definition.type == "boolean" and text.lower() in _TRUE | _FALSE:
            result[definition.name] = text.lower() in _TRUE
        elif definition.type in ("list", "object"):
            try:
                parsed = jsonlimits.loads(text, json_limits)
            except jsonlimits.JsonLimitError as exc:
                raise InvalidArgument("some variables are invalid", errors=[FieldError(
                    definition.name + exc.path, exc.problem)]) from None
            except ValueError:
                continue
            if isinstance(parsed, list if definition.type == "list" else dict):
                result[definition.name] = parsed
    return result


#: The variable type each JSON type of a sample value maps to (text needs no conversion).
_TYPE_OF_SAMPLE = {"boolean": "boolean", "number": "number", "array": "list", "object": "object"}


def coerce_like_samples(
    samples: Mapping[str, Any], variables: Mapping[str, Any], defined: Collection[str],
    json_limits: jsonlimits.JsonLimits,
) -> dict[str, Any]:
    """Variables that arrived as text (a URL query) and have no definition,
    converted to the type of the template's sample value of the same name
    where the text reads as one: with a sample ``"featured": true``,
    ``featured=false`` is false, not the (truthy) text ``"false"``. An object
    sample converts the values inside an object variable (``user.age=36``
    with a sample ``{"user": {"age": 30}}``) the same way."""
    result = dict(variables)
    for name, sample in samples.items():
        if name in defined or name not in result:
            continue
        value = result[name]
        if isinstance(sample, dict) and isinstance(value, dict):
            result[name] = coerce_like_samples(sample, value, (), json_limits)
            continue
        kind = _TYPE_OF_SAMPLE.get(type_name(sample))
        if kind is not None and isinstance(value, str):
            result.update(coerce_strings([VariableDefinition(name=name, type=kind)],
                                         {name: value}, json_limits))
    return result
