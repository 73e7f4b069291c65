"""Copilot plans, kept between ``PlanCopilot`` and the preview or apply of
some of their steps.

A plan is one document of ``copilot_plans``: its tenant, template, the
version it was planned against, which planner made it and its steps (as
``Step.to_json``, read back as strictly as a new model reply). A plan's
steps are applied once (:meth:`CopilotPlans.claim`). A plan lasts ``ttl``
seconds, and a template keeps its newest ``max_per_template`` plans: saving
one deletes the older and the expired ones of that template, so a tenant
asking again and again holds a bounded number of documents.

Clients name a step ``"<plan id>.<step id>"`` (``cp_….s2``): the plan id is
unguessable, and a plan of another tenant or template is as missing as one
that never existed.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from litho.docstore import DocumentStore
from litho.errors import FieldError, InvalidArgument
from services.template._copilot import CopilotLimits, Step, step_from_json

PLANS: Final = "copilot_plans"
_PLAN_ID = re.compile(r"cp_[0-9a-f]{24}")


@dataclass(frozen=True)
class Plan:
    id: str
    template_id: str
    template_version: int
    planner: str
    steps: list[Step]


def new_plan_id() -> str:
    return f"cp_{secrets.token_hex(12)}"


def step_ref(plan_id: str, step_id: str) -> str:
    """What clients call a step: ``"<plan id>.<step id>"``."""
    return f"{plan_id}.{step_id}"


def split_refs(refs: Sequence[str], field: str = "steps") -> tuple[str, list[str]]:
    """The one plan ``refs`` name, and their step ids; a 422 naming the item
    otherwise."""
    if not refs:
        raise _refused(field, "must name at least one step")
    plan_id = ""
    steps: list[str] = []
    for i, ref in enumerate(refs):
        plan, dot, step = ref.partition(".")
        if not dot or not _PLAN_ID.fullmatch(plan) or not step:
            raise _refused(f"{field}[{i}]", f"{ref[:80]!r} is not a step id of a copilot plan "
                                            "(they look like cp_….s1)")
        if plan_id and plan != plan_id:
            raise _refused(f"{field}[{i}]", "all steps must come from one plan")
        plan_id = plan
        steps.append(step)
    return plan_id, steps


class CopilotPlans:
    def __init__(self, store: DocumentStore, *, ttl: float, max_per_template: int,
                 limits: CopilotLimits, clock: Callable[[], float] = time.time) -> None:
        self._plans = store.collection(PLANS)
        self._ttl = ttl
        self._max_per_template = max(1, max_per_template)
        self._limits = limits
        self._clock = clock

    async def prepare(self) -> None:
        await self._plans.ensure_index(["templateId"])

    async def save(self, tenant_id: str, template_id: str, version: int, planner: str,
                   steps: Sequence[Step]) -> str:
        plan_id = new_plan_id()
        now = self._clock()
        await self._plans.insert({
            "_id": plan_id, "tenantId": tenant_id, "templateId": template_id,
            "templateVersion": version, "planner": planner,
            "steps": [s.to_json() for s in steps], "createTime": now})
        await self._prune(tenant_id, template_id, now)
        return plan_id

    async def _prune(self, tenant_id: str, template_id: str, now: float) -> None:
        kept = await self._plans.find({"templateId": template_id, "tenantId": tenant_id},
                                      sort=[("createTime", -1)])
        old = [d["_id"] for i, d in enumerate(kept)
               if i >= self._max_per_template or d.get("createTime", 0) < now - self._ttl]
        if old:
            await self._plans.delete({"_id": {"$in": old}})

    async def load(self, tenant_id: str, template_id: str, plan_id: str,
                   field: str = "steps") -> Plan:
        """The plan, or a 422 naming ``field`` when there is none (another
        tenant's, another template's, expired)."""
        doc = await self._plans.get(plan_id)
        if (doc is None or doc.get("tenantId") != tenant_id
                or doc.get("templateId") != template_id
                or float(doc.get("createTime", 0)) < self._clock() - self._ttl):
            raise _refused(field, f"no copilot plan {plan_id} for this template (plans are "
                                  f"kept {self._ttl:g} s and the newest "
                                  f"{self._max_per_template} per template: ask again)")
        return Plan(id=plan_id, template_id=template_id,
                    template_version=int(doc["templateVersion"]),
                    planner=str(doc.get("planner", "")),
                    steps=[step_from_json(s, f"plan.steps[{i}]", self._limits)
                           for i, s in enumerate(doc.get("steps") or ())])

    async def claim(self, plan_id: str) -> bool:
        """Mark the plan applied; False when it already was (a plan's steps
        apply once: a plan of only ``duplicate_template`` steps leaves the
        template's version where it was, so the version alone would not
        stop a second apply)."""
        claimed = await self._plans.find_one_and_update(
            {"_id": plan_id, "appliedAt": None}, {"$set": {"appliedAt": self._clock()}})
        return claimed is not None

    async def release(self, plan_id: str) -> None:
        """Undo :meth:`claim` after an apply that failed (nothing of it stays)."""
        await self._plans.update({"_id": plan_id}, {"$set": {"appliedAt": None}})

    async def delete_for(self, tenant_id: str, template_id: str) -> None:
        """Every plan of a deleted template."""
        await self._plans.delete({"templateId": template_id, "tenantId": tenant_id})


def _refused(field: str, problem: str) -> InvalidArgument:
    return InvalidArgument(f"{field}: {problem}", errors=[FieldError(field, problem)])
