"""The template copilot's engine: a typed operation vocabulary, a deterministic
planner, an applier that edits HTML by minimal splices, and the parser of a
language model's replies. Pure and synchronous (the model call is one
injected async port); no gRPC, HTTP server or storage here.

Errors: every refusal is ``litho.errors.InvalidArgument`` (422) naming the
field — :class:`VocabularyError` for JSON that breaks the vocabulary,
:class:`ApplyError` for an operation that does not fit the template, and the
prompt and history checks; the model path adds ``Unavailable`` and
``DeadlineExceeded``. Design notes: docs (the lead's copy of copilot-design.md).
"""

from services.template._copilot._apply import (
    Applied,
    ApplyError,
    NewTemplate,
    TemplateView,
    apply,
)
from services.template._copilot._limits import CopilotLimits
from services.template._copilot._model import (
    Fetch,
    FetchReply,
    ModelConfig,
    ModelPlanner,
    build_messages,
    parse_reply,
)
from services.template._copilot._planner import PLATFORMS, plan
from services.template._copilot._request import Turn, check_history, check_prompt
from services.template._copilot._schema import vocabulary_schema
from services.template._copilot._vocabulary import (
    AddElement,
    DuplicateTemplate,
    Operation,
    Props,
    RemoveElement,
    ResizeCanvas,
    SetStyle,
    SetText,
    Step,
    SwapPalette,
    Target,
    VocabularyError,
    accept,
    operation_from_json,
    step_from_json,
)

__all__ = [
    "PLATFORMS",
    "AddElement",
    "Applied",
    "ApplyError",
    "CopilotLimits",
    "DuplicateTemplate",
    "Fetch",
    "FetchReply",
    "ModelConfig",
    "ModelPlanner",
    "NewTemplate",
    "Operation",
    "Props",
    "RemoveElement",
    "ResizeCanvas",
    "SetStyle",
    "SetText",
    "Step",
    "SwapPalette",
    "Target",
    "TemplateView",
    "Turn",
    "VocabularyError",
    "accept",
    "apply",
    "build_messages",
    "check_history",
    "check_prompt",
    "operation_from_json",
    "parse_reply",
    "plan",
    "step_from_json",
    "vocabulary_schema",
]
