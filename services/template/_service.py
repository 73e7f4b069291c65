"""The template service's use cases, free of gRPC."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any, Protocol

from opentelemetry import trace

from litho.datasources import source_key
from litho.errors import FieldError, InvalidArgument
from litho.lru import Lru
from litho.outbound import AllowList
from services.template._data_sources import (
    DATA_VARIABLE,
    PendingSource,
    parse_data_sources,
    pending_source,
    reserved_problems,
)
from services.template._fonts import Font
from services.template._lang import (
    Engine,
    FunctionInfo,
    LangExpander,
    StepCapReached,
    deadline_message,
    result_type,
)
from services.template._mapping import compile_mapping, evaluate_mapping
from services.template._model import (
    DATA_BYTES_SETTING,
    Limits,
    Spec,
    Template,
    check_spec,
    parse_json_object,
    parse_json_value,
)
from services.template._store import TemplateRepository, cap_reached
from services.template._variables import (
    DEFAULT_MAX_PATTERN_WORK,
    VariableDefinition,
    apply_definitions,
    coerce_like_samples,
    coerce_strings,
    parse_definitions,
)

_tracer = trace.get_tracer("litho.template")


@dataclass(frozen=True)
class Expansion:
    template: Template
    html: str
    #: The tenant's uploaded fonts whose family the document names.
    fonts: tuple[Font, ...] = ()
    #: Declared data sources neither the variables nor the data give: the
    #: caller fetches them and expands again with their data (html is "").
    pending: tuple[PendingSource, ...] = ()
    #: The caller's known data sources the document was expanded with.
    known_used: tuple[str, ...] = ()


@dataclass(frozen=True)
class _WithSources:
    """A document expanded with data sources' data, and which of the
    caller's known sources gave some of it."""

    html: str
    known_used: tuple[str, ...] = ()


class FontsInUse(Protocol):
    async def used_in(self, tenant_id: str, html: str) -> list[Font]: ...


@dataclass(frozen=True)
class Validation:
    errors: list[FieldError]
    variables: list[str]


class Templates:
    def __init__(
        self,
        repo: TemplateRepository,
        expander: LangExpander,
        limits: Limits,
        *,
        max_pattern_input: int,
        expand_timeout: float,
        max_pattern_work: int = DEFAULT_MAX_PATTERN_WORK,
        fonts: FontsInUse | None = None,
        outbound_allow: AllowList | None = None,
    ) -> None:
        self._repo = repo
        #: Data source URLs with a literal host are checked against it on save.
        self._outbound_allow = outbound_allow
        self._fonts = fonts
        self._expander = expander
        self._engine: Engine = expander.engine
        self._limits = limits
        self._max_pattern_input = max_pattern_input
        self._max_pattern_work = max_pattern_work
        self._expand_timeout = expand_timeout
        self._definitions: Lru[tuple[str, str, int], list[VariableDefinition]] = Lru(
            _DEFINITIONS_CACHE_SIZE)

    def _check(self, spec: Spec, *, creating: bool) -> Spec:
        """Every problem with ``spec``, raised together; the spec with its
        variable definitions normalised and its variables discovered.
        CPU-bound: callers run it in a worker thread."""
        check_spec(spec, self._limits, creating=creating)
        problems: list[FieldError] = []
        if spec.html is not None:
            # One parse: a source that compiles is checked, and is cached for
            # its first render.
            try:
                compiled = self._expander.compiled(spec.html)
            except InvalidArgument as exc:
                problems += exc.errors
            else:
                # Refused on save only: a stored template with such text
                # still renders it as written.
                problems += compiled.foreign_tags
                spec = replace(spec, discovered_variables=list(compiled.variables))
        if spec.variable_definitions is not None:
            try:
                definitions = parse_definitions(spec.variable_definitions)
            except InvalidArgument as exc:
                problems += exc.errors
            else:
                spec = replace(spec,
                               variable_definitions=[d.to_json() for d in definitions])
        if spec.data_sources is not None:
            try:
                sources = parse_data_sources(spec.data_sources, self._expander.check,
                                             max_sources=self._limits.max_data_sources,
                                             allow=self._outbound_allow)
            except InvalidArgument as exc:
                problems += exc.errors
            else:
                spec = replace(spec, data_sources=sources)
        if problems:
            raise InvalidArgument("the template is invalid", errors=problems)
        if creating:
            _check_reserved(spec.data_sources or [], spec.variable_definitions or [])
        return spec

    async def create(self, tenant_id: str, spec: Spec) -> Template:
        # The cap first, so a tenant at it spends no check of the source.
        count, limit = await self._repo.count(tenant_id), self._limits.max_per_tenant
        if count >= limit:
            raise cap_reached(count, limit)
        checked = await asyncio.to_thread(self._check, spec, creating=True)
        return await self._repo.create(tenant_id, checked, limit=limit)

    async def get(self, tenant_id: str, template_id: str) -> Template:
        return await self._repo.latest(tenant_id, template_id)

    async def list_templates(
        self, tenant_id: str, page_size: int, page_token: str, *, name_prefix: str = "",
        tag: str = "",
    ) -> tuple[list[Template], str]:
        return await self._repo.list(
            tenant_id, page_size=_page_size(page_size), page_token=page_token,
            name_prefix=name_prefix, tag=tag)

    async def versions(
        self, tenant_id: str, template_id: str, page_size: int, page_token: str
    ) -> tuple[list[Template], str]:
        return await self._repo.versions(
            tenant_id, template_id, page_size=_page_size(page_size), page_token=page_token)

    async def update(self, tenant_id: str, template_id: str, spec: Spec, *,
                     expected_version: int | None = None) -> Template:
        """A new version; with ``expected_version``, only from that one (else Conflict)."""
        checked = await asyncio.to_thread(self._check, spec, creating=False)
        return await self._repo.update(
            tenant_id, template_id, checked,
            check=lambda t: _check_reserved(t.data_sources, t.variable_definitions),
            expected_version=expected_version)

    async def delete(self, tenant_id: str, template_id: str) -> None:
        await self._repo.delete(tenant_id, template_id)

    async def expand(
        self, tenant_id: str, template_id: str, version: int, variables_json: str,
        *, coerce: bool = False, data_json: str = "",
        known: Mapping[str, tuple[str, str]] | None = None,
    ) -> Expansion:
        """The expanded version; for a version that declares data sources the
        variables and ``data_json`` do not all give, the sources to fetch
        (``Expansion.pending``) and no html. ``known`` (name: (request key,
        data JSON), consulted when ``data_json`` is empty) gives a source
        whose expanded request has that key."""
        if version < 0:
            raise InvalidArgument("version must be 1 or more",
                                  errors=[FieldError("version", "must be 1 or more")])
        deadline = time.monotonic() + self._expand_timeout
        with _tracer.start_as_current_span("template expand", attributes={
            "litho.tenant.id": tenant_id, "litho.template.id": template_id,
            "litho.template.version_requested": version,
            "litho.template.variables_chars": len(variables_json),
        }) as span:
            template = (
                await self._repo.version(tenant_id, template_id, version)
                if version
                else await self._repo.latest(tenant_id, template_id)
            )
            span.set_attribute("litho.template.version", template.version)
            expand: Callable[[Template, str, bool, int | None, float],
                             str | _WithSources | tuple[PendingSource, ...]]
            known = {} if data_json else dict(known or {})
            if template.data_sources:
                expand = partial(self._expand_with_sources_sync, data_json=data_json,
                                 known=known)
                size = (len(template.html) + len(variables_json) + len(data_json)
                        + sum(len(text) for _, text in known.values()))
            else:
                expand = self._expand_sync
                size = len(template.html) + len(variables_json)
            where = "worker"
            if size <= _INLINE_BYTES and self._definitions_ready(template, len(variables_json)):
                # A typical card expands in ~40 µs, less than a hop to a thread; one
                # that needs more than a few milliseconds of steps is stopped and
                # expanded again in a worker, so no template can hold the loop.
                try:
                    result = expand(template, variables_json, coerce, _INLINE_STEPS, deadline)
                    where = "inline"
                except StepCapReached:
                    result = await asyncio.to_thread(
                        expand, template, variables_json, coerce, None, deadline)
                    where = "inline, then worker"
            else:
                result = await asyncio.to_thread(
                    expand, template, variables_json, coerce, None, deadline)
            if isinstance(result, tuple):
                span.set_attributes({"litho.template.expanded_in": where,
                                     "litho.template.pending_data_sources": len(result)})
                return Expansion(template=template, html="", pending=result)
            html, known_used = ((result.html, result.known_used)
                                if isinstance(result, _WithSources) else (result, ()))
            span.set_attributes({"litho.template.expanded_in": where,
                                 "litho.template.html_chars": len(html),
                                 "litho.template.known_data_sources": len(known_used)})
            fonts = await self._fonts_in(tenant_id, html)
            if fonts:
                span.set_attribute("litho.template.fonts", len(fonts))
        return Expansion(template=template, html=html, fonts=fonts, known_used=known_used)

    async def expand_inline(self, tenant_id: str, spec: Spec,
                            variables_json: str) -> Expansion:
        """Expand a one-shot source (``POST /v1/render``): checked as a save
        checks a template (size, dimensions, syntax, definitions), then
        expanded like a stored version. Nothing is stored; compiled sources
        are cached by their hash, so a repeated source compiles once."""
        missing = [FieldError(f, "is required") for f in ("html", "width", "height")
                   if getattr(spec, f) is None]
        if spec.data_sources:
            missing.append(FieldError("dataSources", "a one-shot render cannot declare data "
                                                     "sources: save the template, then render it"))
        if missing:
            raise InvalidArgument("the template is invalid", errors=missing)
        deadline = time.monotonic() + self._expand_timeout
        with _tracer.start_as_current_span("template expand", attributes={
            "litho.tenant.id": tenant_id, "litho.template.inline": True,
            "litho.template.variables_chars": len(variables_json),
        }) as span:
            checked = await asyncio.to_thread(self._check, spec, creating=False)
            assert checked.html is not None and checked.width and checked.height
            now = datetime.now(UTC)
            template = Template(
                id="", tenant_id=tenant_id, name="", html=checked.html, width=checked.width,
                height=checked.height, sample_variables=checked.sample_variables or {},
                version=0, create_time=now, update_time=now,
                variable_definitions=checked.variable_definitions or [])
            html = await asyncio.to_thread(
                self._expand_sync, template, variables_json, False, None, deadline)
            span.set_attribute("litho.template.html_chars", len(html))
            fonts = await self._fonts_in(tenant_id, html)
            if fonts:
                span.set_attribute("litho.template.fonts", len(fonts))
        return Expansion(template=template, html=html, fonts=fonts)

    async def _fonts_in(self, tenant_id: str, html: str) -> tuple[Font, ...]:
        if self._fonts is None:
            return ()
        return tuple(await self._fonts.used_in(tenant_id, html))

    def _definitions_ready(self, template: Template, variables_size: int) -> bool:
        """Whether the template's definitions are parsed (their patterns
        compiled) already, and matching them against variables of this size
        stays cheap: compiling and heavy matching are left to a worker."""
        if not template.variable_definitions:
            return True
        definitions = self._definitions.get(_version_key(template))
        if definitions is None:
            return False
        program = sum(d.validation.pattern.size for d in definitions if d.validation.pattern)
        return program * variables_size <= _INLINE_PATTERN_WORK

    def _definitions_of(self, template: Template) -> list[VariableDefinition]:
        if not template.id:
            # A one-shot source: no version to cache its definitions under.
            return parse_definitions(template.variable_definitions)
        key = _version_key(template)
        definitions = self._definitions.get(key)
        if definitions is None:
            try:
                definitions = parse_definitions(template.variable_definitions)
            except InvalidArgument as exc:
                # Saved before a rule changed (patterns became RE2 syntax).
                raise InvalidArgument(
                    "the template's saved variable definitions are no longer valid; "
                    "update the template to fix them", errors=exc.errors) from None
            self._definitions.put(key, definitions)
        return definitions

    def _expand_sync(
        self, template: Template, variables_json: str, coerce: bool, step_cap: int | None,
        deadline: float,
    ) -> str:
        """Parse, check and expand: CPU-bound, bounded by the language's steps
        and by the expansion deadline, which also covers checking the variables."""
        variables = self._variables(template, variables_json, coerce, deadline)
        return self._expander.expand(
            template.html, variables, max_output=self._limits.max_output_bytes,
            timeout=self._expand_timeout, deadline=deadline, step_cap=step_cap,
        )

    def _expand_with_sources_sync(
        self, template: Template, variables_json: str, coerce: bool, step_cap: int | None,
        deadline: float, *, data_json: str, known: Mapping[str, tuple[str, str]],
    ) -> _WithSources | tuple[PendingSource, ...]:
        """As ``_expand_sync`` for a version with data sources: the sources
        that neither ``variables["data"]`` (an object) nor ``data_json`` give,
        expanded with the variables, unless ``known`` gives every one of them
        for the very request it expands to; or else the document, rendered
        with ``data`` = the data overlaid with the variables' own ``data``
        (the render's explicit variables win, source by source)."""
        variables = self._variables(template, variables_json, coerce, deadline)
        data: dict[str, Any] = parse_json_object(
            data_json, field=DATA_VARIABLE, max_bytes=self._limits.max_data_bytes,
            json_limits=self._limits.json, setting=DATA_BYTES_SETTING)
        given = variables.get(DATA_VARIABLE)
        explicit: dict[str, Any] = given if isinstance(given, dict) else {}
        missing = [s for s in template.data_sources
                   if s["name"] not in explicit and s["name"] not in data]
        known_used: tuple[str, ...] = ()
        if missing:
            def render(text: str, field: str, *, url: bool = False) -> str:
                return self._render_plain(text, field, variables, step_cap, deadline,
                                          url=url)

            pending = tuple(pending_source(source, render) for source in missing)
            given = _known_for(pending, known)
            if given is None:
                return pending
            data = self._known_data(given)
            known_used = tuple(given)
        variables[DATA_VARIABLE] = {**data, **explicit}
        return _WithSources(self._expander.expand(
            template.html, variables, max_output=self._limits.max_output_bytes,
            timeout=self._expand_timeout, deadline=deadline, step_cap=step_cap,
        ), known_used)

    def _known_data(self, given: Mapping[str, str]) -> dict[str, Any]:
        """The caller's known data, each source parsed apart (one level down,
        as ``data_json`` would hold it) and bounded in all by the data limit."""
        limit = self._limits.max_data_bytes
        size = sum(len(text.encode("utf-8", "surrogatepass")) for text in given.values())
        if size > limit:
            raise InvalidArgument(
                f"{DATA_VARIABLE} is larger than {limit} bytes ({DATA_BYTES_SETTING})",
                errors=[FieldError(DATA_VARIABLE, f"at most {limit} bytes ({DATA_BYTES_SETTING})")])
        nested = replace(self._limits.json, max_depth=max(1, self._limits.json.max_depth - 1))
        return {name: parse_json_value(text, field=f"{DATA_VARIABLE}.{name}", max_bytes=limit,
                                       json_limits=nested, setting=DATA_BYTES_SETTING)
                for name, text in given.items()}

    def _render_plain(self, text: str, field: str, variables: dict[str, Any],
                      step_cap: int | None, deadline: float, *, url: bool = False) -> str:
        """``text`` (a data source's URL, header value or body) expanded as
        plain text (a URL's outputs URI-encoded); an error names ``field``."""
        if "{{" not in text:
            return text
        try:
            return self._expander.expand(
                text, variables, max_output=self._limits.max_output_bytes,
                timeout=self._expand_timeout, deadline=deadline, step_cap=step_cap,
                escape=False, url=url)
        except InvalidArgument as exc:
            errors = [FieldError(field, e.message) for e in exc.errors]
            raise InvalidArgument(f"{field}: {errors[0].message if errors else exc.message}",
                                  errors=errors or [FieldError(field, exc.message)]) from None

    def _variables(
        self, template: Template, variables_json: str, coerce: bool, deadline: float,
    ) -> dict[str, Any]:
        """The render's variables: parsed, converted (``coerce``), checked
        against the definitions and with their defaults."""
        variables: dict[str, Any] = parse_json_object(
            variables_json, field="variables", max_bytes=self._limits.max_variables_bytes,
            json_limits=self._limits.json,
        )
        definitions = (self._definitions_of(template) if template.variable_definitions
                       else [])
        if coerce and template.sample_variables:
            # Text from a URL takes the type of its sample, unless defined.
            variables = coerce_like_samples(template.sample_variables, variables,
                                            {d.name for d in definitions}, self._limits.json)
        if definitions:
            if coerce:
                variables = coerce_strings(definitions, variables, self._limits.json)
            variables = apply_definitions(definitions, variables,
                                          max_pattern_input=self._max_pattern_input,
                                          max_pattern_work=self._max_pattern_work)
            if time.monotonic() > deadline:
                raise InvalidArgument(deadline_message(self._expand_timeout))
        return variables

    # ------------------------------------------------------------ the language

    async def validate(self, *, expression: str | None, template: str | None) -> Validation:
        return await asyncio.to_thread(self._validate, expression, template)

    def _validate(self, expression: str | None, template: str | None) -> Validation:
        if template is not None:
            errors = self._expander.check(template)
            variables = [] if errors else self._engine.discover_variables(template)
            return Validation(errors=errors, variables=variables)
        return Validation(errors=self._engine.validate_expression(expression or ""),
                          variables=[])

    async def test(self, expression: str, variables_json: str) -> tuple[Any, str]:
        return await asyncio.to_thread(self._test, expression, variables_json)

    def _test(self, expression: str, variables_json: str) -> tuple[Any, str]:
        variables = parse_json_object(
            variables_json, field="variables", max_bytes=self._limits.max_variables_bytes,
            json_limits=self._limits.json)
        value = self._engine.evaluate_expression(
            expression, variables, timeout=self._expand_timeout,
            max_output=self._limits.max_output_bytes)
        return value, result_type(value)

    def functions(self) -> list[FunctionInfo]:
        return self._engine.list_functions()

    async def evaluate_mapping(self, mapping: Mapping[str, str], data_json: str, *,
                               check_only: bool = False) -> str:
        """The variables a binding's mapping gives over ``data_json``, as JSON
        object text (``_mapping``); with ``check_only``, only the syntax is
        checked (and "{}" answered)."""
        return await asyncio.to_thread(self._evaluate_mapping, dict(mapping), data_json,
                                       check_only)

    def _evaluate_mapping(self, mapping: dict[str, str], data_json: str,
                          check_only: bool) -> str:
        deadline = time.monotonic() + self._expand_timeout
        compiled = compile_mapping(self._engine, mapping)
        if check_only:
            return "{}"
        data = parse_json_value(data_json, field=DATA_VARIABLE,
                                max_bytes=self._limits.max_data_bytes,
                                json_limits=self._limits.json, setting=DATA_BYTES_SETTING)
        return evaluate_mapping(self._engine, compiled, data, timeout=self._expand_timeout,
                                deadline=deadline, max_bytes=self._limits.max_variables_bytes)


def _check_reserved(data_sources: list[dict[str, Any]],
                    definitions: list[dict[str, Any]]) -> None:
    problems = reserved_problems(data_sources, definitions)
    if problems:
        raise InvalidArgument("the template is invalid", errors=problems)


#: Sources and variables up to this size expand on the event loop, for at most
#: ``_INLINE_STEPS`` steps (a few milliseconds); larger ones, and any that
#: needs more steps, expand in a worker thread with the whole budget. The
#: size also bounds the pattern matching done inline: RE2 is linear, but a
#: pattern whose automaton outgrows its memory matches at ~4 µs a character.
_INLINE_BYTES = 8 * 1024
_INLINE_STEPS = 20_000
#: Characters × pattern instructions matched on the loop at most (~3 ms).
_INLINE_PATTERN_WORK = 1_000_000


#: Parsed variable definitions (with compiled patterns) kept, by version.
_DEFINITIONS_CACHE_SIZE = 256


def _version_key(template: Template) -> tuple[str, str, int]:
    return template.tenant_id, template.id, template.version


def _page_size(requested: int) -> int:
    return min(requested if requested > 0 else 50, 100)


def _known_for(pending: tuple[PendingSource, ...],
               known: Mapping[str, tuple[str, str]]) -> dict[str, str] | None:
    """Each pending source's known data (name: JSON text), or None unless the
    caller knows every one for exactly the request it expands to."""
    given: dict[str, str] = {}
    for p in pending:
        entry = known.get(p.name)
        if entry is None or entry[0] != source_key(p.url, p.method, p.headers.items(),
                                                   p.body, p.ttl_seconds):
            return None
        given[p.name] = entry[1]
    return given
