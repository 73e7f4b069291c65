"""Which scope each operation needs: the one table the authentication
middleware enforces (handlers never check scopes).

``render`` keys render and read: every render (stored template, one-shot
HTML, PDF, batch), signing URLs, the signing key, every ``GET`` of the
tenant's resources, and the expression checks (they compute, store
nothing). Everything that creates, changes or deletes something, fetches a
URL the caller names (data-source tests, binding previews), calls a model
(the copilot) or manages keys needs ``full``. ``public`` operations need no
key at all (``_middleware.is_public`` decides those, by path; the test and
``create_app`` keep both lists in agreement).

An operation missing here is refused to every key but a ``full`` one, and
``create_app`` refuses to start with a route this table does not classify.
"""

from __future__ import annotations

from typing import Final

from services.gateway._keys import FULL, RENDER

PUBLIC: Final = "public"

_PUBLIC_OPERATIONS = (
    "getImage", "headImage", "getOpenApi", "getHealth", "getLiveness", "getReadiness",
    "renderSigned", "headRenderSigned",
    "getBindingImage", "headBindingImage", "pushBindingData", "getExperimentImage",
    "headExperimentImage", "clickExperiment", "getFrontPage", "getApiReference", "getEditor",
    "getWebAsset",
)
_RENDER_OPERATIONS = (
    # Renders.
    "renderTemplate", "renderTemplateShort", "renderPdf", "renderHtml", "batchRender",
    "createSignedUrl", "getSigningKey",
    # Reads.
    "listTemplates", "getTemplate", "listTemplateVersions", "listFonts",
    "listBatches", "getBatch", "listBatchResults", "getBatchArchive",
    "listWebhookSubscriptions", "getWebhookSubscription", "listWebhookDeliveries",
    "listBindings", "getBinding", "getBindingData",
    "listExperiments", "getExperiment", "getExperimentStats",
    # Pure computation: nothing stored, nothing fetched.
    "validateExpression", "testExpression", "listFunctions",
)
_FULL_OPERATIONS = (
    "createTemplate", "updateTemplate", "deleteTemplate",
    "planCopilot", "previewCopilot", "applyCopilot",
    "createFont", "deleteFont", "cancelBatch",
    "createWebhookSubscription", "updateWebhookSubscription", "deleteWebhookSubscription",
    "rotateWebhookSubscriptionSecret", "redeliverWebhookDelivery",
    "createBinding", "previewBinding", "updateBinding", "deleteBinding", "pauseBinding",
    "resumeBinding", "refreshBinding", "testDataSource",
    "createExperiment", "updateExperiment", "deleteExperiment", "startExperiment",
    "pauseExperiment", "archiveExperiment", "completeExperiment", "recordExperimentEvents",
    "createKey", "listKeys", "deleteKey",
)

#: The scope each operation id needs.
SCOPE_OF: Final[dict[str, str]] = {
    **dict.fromkeys(_PUBLIC_OPERATIONS, PUBLIC),
    **dict.fromkeys(_RENDER_OPERATIONS, RENDER),
    **dict.fromkeys(_FULL_OPERATIONS, FULL),
}


def scope_needed(operation_id: str) -> str:
    """The scope ``operation_id`` needs; ``full`` for one the table lacks."""
    return SCOPE_OF.get(operation_id, FULL)
