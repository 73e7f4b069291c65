"""The template service's use cases, free of gRPC."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from litho.errors import InvalidArgument
from services.template._expand import Expander
from services.template._model import Limits, Spec, Template, check_spec, parse_json_object
from services.template._store import TemplateRepository


@dataclass(frozen=True)
class Expansion:
    template: Template
    html: str


class Templates:
    def __init__(self, repo: TemplateRepository, expander: Expander, limits: Limits) -> None:
        self._repo = repo
        self._expander = expander
        self._limits = limits

    def _check(self, spec: Spec, *, creating: bool) -> None:
        check_spec(spec, self._limits, creating=creating)
        if spec.html is not None:
            problems = self._expander.check(spec.html)
            if problems:
                raise InvalidArgument("the template has syntax errors", errors=problems)

    async def create(self, tenant_id: str, spec: Spec) -> Template:
        self._check(spec, creating=True)
        return await self._repo.create(tenant_id, spec)

    async def get(self, tenant_id: str, template_id: str) -> Template:
        return await self._repo.latest(tenant_id, template_id)

    async def list(
        self, tenant_id: str, page_size: int, page_token: str
    ) -> tuple[list[Template], str]:
        size = page_size if page_size > 0 else 50
        return await self._repo.list(tenant_id, page_size=min(size, 100), page_token=page_token)

    async def update(self, tenant_id: str, template_id: str, spec: Spec) -> Template:
        self._check(spec, creating=False)
        return await self._repo.update(tenant_id, template_id, spec)

    async def delete(self, tenant_id: str, template_id: str) -> None:
        await self._repo.delete(tenant_id, template_id)

    async def expand(
        self, tenant_id: str, template_id: str, version: int, variables_json: str
    ) -> Expansion:
        if version < 0:
            raise InvalidArgument("version must be 1 or more")
        template = (
            await self._repo.version(tenant_id, template_id, version)
            if version
            else await self._repo.latest(tenant_id, template_id)
        )
        variables: dict[str, Any] = parse_json_object(
            variables_json, field="variables", max_bytes=self._limits.max_variables_bytes
        )
        html = self._expander.expand(
            template.html, variables, max_output=self._limits.max_output_bytes
        )
        return Expansion(template=template, html=html)
