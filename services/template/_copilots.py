"""The copilot as the template service offers it: plan steps for a prompt
(the embedded planner, or a language model behind ``LITHO_COPILOT_URL``
called through the outbound guard), keep the plan, and preview or apply the
steps a client accepts.

Applying is all or nothing: the accepted steps are applied to the version
they were planned against (a template that has moved on since is a 409), the
new templates ``duplicate_template`` steps ask for are created first (each a
copy of the template: its sample data, variable definitions, tags and data
sources, with the new name, HTML and size), then the template gets one new
version, conditional on that same version; if anything fails, the templates
created are deleted again. Every result passes the template service's own
checks (syntax, sizes) as any save does.

Planning and applying parse the template's HTML, which a hostile template
can make take minutes: they run in the copilot's own sandbox of worker
processes (``_copilot_work``), killed when their time is up or their caller
gives up, so no thread of the service is ever held by them. A plan's steps
apply once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from litho import jsonlimits
from litho.errors import Conflict, FieldError, InvalidArgument, Unavailable
from litho.logs import get_logger
from litho.sandbox import Sandbox, SandboxLimit
from services.template._copilot import (
    Applied,
    CopilotLimits,
    ModelPlanner,
    Step,
    TemplateView,
    accept,
)
from services.template._copilot_plans import CopilotPlans, Plan, split_refs
from services.template._copilot_work import apply_steps, plan_steps, unwrap
from services.template._model import Spec, Template
from services.template._service import Templates

log = get_logger(__name__)

#: The planners, as ``PlanCopilotResponse.planner`` names them.
RULES = "rules"
MODEL = "model"


@dataclass(frozen=True)
class Planned:
    plan_id: str
    template_version: int
    planner: str
    steps: list[Step]


@dataclass(frozen=True)
class Result:
    template: Template
    created: list[Template]


class Copilot:
    def __init__(self, templates: Templates, plans: CopilotPlans, limits: CopilotLimits,
                 sandbox: Sandbox, *, json_limits: jsonlimits.JsonLimits,
                 model: ModelPlanner | None = None, work_timeout: float = 10.0) -> None:
        self._templates = templates
        self._plans = plans
        self._limits = limits
        self._sandbox = sandbox
        self._json_limits = json_limits
        self._model = model
        self._work_timeout = work_timeout

    @property
    def planner(self) -> str:
        return MODEL if self._model is not None else RULES

    async def plan(self, tenant_id: str, template_id: str, prompt: str,
                   history_json: str) -> Planned:
        history = self._history(history_json)
        template = await self._templates.get(tenant_id, template_id)
        view = _view(template)
        if self._model is not None:
            steps = await self._model.plan(prompt, view, history=history)
        else:
            steps = unwrap(await self._in_worker(plan_steps, prompt, view, history,
                                                 self._limits))
        plan_id = await self._plans.save(tenant_id, template_id, template.version,
                                         self.planner, steps)
        return Planned(plan_id, template.version, self.planner, steps)

    async def preview(self, tenant_id: str, template_id: str, refs: list[str]
                      ) -> tuple[Template, Applied]:
        """The template and what the accepted steps would make of it."""
        template, _, applied = await self._applied(tenant_id, template_id, refs)
        return template, applied

    async def apply(self, tenant_id: str, template_id: str, refs: list[str]) -> Result:
        template, steps, applied = await self._applied(tenant_id, template_id, refs)
        plan_id = split_refs(refs)[0]
        if not await self._plans.claim(plan_id):
            raise Conflict(f"the steps of plan {plan_id} were applied already: ask the "
                           "copilot again")
        created: list[Template] = []
        try:
            for new in applied.created:
                created.append(await self._templates.create(tenant_id, Spec(
                    name=new.name, html=new.html, width=new.width, height=new.height,
                    sample_variables=template.sample_variables,
                    variable_definitions=template.variable_definitions,
                    tags=template.tags, data_sources=template.data_sources)))
            updated = template
            if (applied.html, applied.width, applied.height) != (
                    template.html, template.width, template.height):
                updated = await self._templates.update(
                    tenant_id, template_id,
                    Spec(html=applied.html, width=applied.width, height=applied.height),
                    expected_version=template.version)
        except BaseException:
            await self._plans.release(plan_id)
            for made in created:
                try:
                    await self._templates.delete(tenant_id, made.id)
                except Exception as exc:  # logged: the caller sees the first failure
                    log.error("a template the copilot created was not deleted again",
                              template=made.id, error=str(exc)[:200])
            raise
        log.info("copilot steps applied", template=template_id, steps=[s.id for s in steps],
                 version=updated.version, created=[t.id for t in created])
        return Result(updated, created)

    async def forget(self, tenant_id: str, template_id: str) -> None:
        """Drop the plans of a deleted template."""
        await self._plans.delete_for(tenant_id, template_id)

    async def _applied(self, tenant_id: str, template_id: str, refs: list[str]
                       ) -> tuple[Template, list[Step], Applied]:
        plan_id, step_ids = split_refs(refs)
        # The template first: another tenant's is a 404 whatever the steps.
        template = await self._templates.get(tenant_id, template_id)
        stored: Plan = await self._plans.load(tenant_id, template_id, plan_id)
        if template.version != stored.template_version:
            raise Conflict(f"template {template_id} is at version {template.version}; these "
                           f"steps were planned for version {stored.template_version}: "
                           "ask the copilot again")
        steps = accept(stored.steps, step_ids)
        operations = [s.operation for s in steps if s.operation is not None]
        applied = unwrap(await self._in_worker(apply_steps, _view(template), operations,
                                               [s.id for s in steps], self._limits))
        return template, steps, applied

    def _history(self, history_json: str) -> Any:
        if not history_json:
            return None
        try:
            return jsonlimits.loads(history_json, self._json_limits)
        except ValueError as exc:
            raise InvalidArgument(f"history: {exc}",
                                  errors=[FieldError("history", str(exc))]) from exc

    async def _in_worker(self, fn: Any, *args: object) -> Any:
        try:
            return await self._sandbox.run(fn, *args)
        except SandboxLimit as exc:
            if exc.kind == "crash":
                raise Unavailable("the copilot's worker process crashed; retry") from exc
            what = (f"took longer than {self._work_timeout:g} s "
                    "(LITHO_COPILOT_WORK_TIMEOUT)" if exc.kind == "time"
                    else "needed more memory than LITHO_COPILOT_WORK_MEMORY allows")
            raise InvalidArgument(f"the copilot {what} on this template; simplify it or "
                                  "ask for less at once") from exc


def _view(template: Template) -> TemplateView:
    return TemplateView(html=template.html, width=template.width, height=template.height,
                        name=template.name)
