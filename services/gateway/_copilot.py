"""``/v1/templates/{templateId}/copilot``: the template copilot's steps for a
prompt, a preview of the accepted ones, and those applied as one new version
(the template service plans, keeps the plan and applies; see
``services.template._copilots``)."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from litho.template.v1 import template_pb2 as pb
from services.gateway._handlers import template_json
from services.gateway._state import caller, deps
from services.gateway._validation import body as json_body


def step_json(step: pb.CopilotStep) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": step.id, "description": step.description,
        "operation": json.loads(step.operation_json) if step.operation_json else None}
    if step.error:
        out["error"] = step.error
    return out


def draft_json(draft: pb.CopilotDraft) -> dict[str, Any]:
    return {"name": draft.name, "html": draft.html, "width": draft.width,
            "height": draft.height}


async def plan_copilot(request: web.Request) -> web.Response:
    body = json_body(request)
    history = body.get("history")
    response = await deps(request).templates.PlanCopilot(pb.PlanCopilotRequest(
        tenant_id=caller(request).tenant_id, template_id=request.match_info["templateId"],
        prompt=body["prompt"], history_json="" if history is None else json.dumps(history)))
    return web.json_response({
        "planId": response.plan_id, "templateVersion": response.template_version,
        "planner": response.planner, "steps": [step_json(s) for s in response.steps]})


async def preview_copilot(request: web.Request) -> web.Response:
    response = await deps(request).templates.PreviewCopilot(pb.PreviewCopilotRequest(
        tenant_id=caller(request).tenant_id, template_id=request.match_info["templateId"],
        step_ids=json_body(request)["steps"]))
    return web.json_response({"template": draft_json(response.template),
                              "created": [draft_json(d) for d in response.created]})


async def apply_copilot(request: web.Request) -> web.Response:
    response = await deps(request).templates.ApplyCopilot(pb.ApplyCopilotRequest(
        tenant_id=caller(request).tenant_id, template_id=request.match_info["templateId"],
        step_ids=json_body(request)["steps"]))
    return web.json_response({"template": template_json(response.template),
                              "created": [template_json(t) for t in response.created]})
