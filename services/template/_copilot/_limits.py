"""Every bound of the copilot, one frozen value the service builds from settings."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CopilotLimits:
    """Defaults are the suggested settings (``LITHO_COPILOT_*``); the lead maps them."""

    #: Largest prompt, in UTF-8 bytes (LITHO_COPILOT_MAX_PROMPT_BYTES).
    max_prompt_bytes: int = 4 * 1024
    #: Most history entries, and their total content in UTF-8 bytes.
    max_history_entries: int = 20
    max_history_bytes: int = 16 * 1024
    #: Most steps in one plan (planner or model), and operations in one
    #: ``duplicate_template``.
    max_steps: int = 20
    #: Most operations one apply runs in all, those inside ``duplicate_template``
    #: steps included (each rereads the whole document).
    max_operations: int = 40
    #: Largest template HTML the copilot edits, and the largest result
    #: (the template service's LITHO_TEMPLATE_MAX_HTML_BYTES).
    max_html_bytes: int = 512 * 1024
    #: How much of the template's HTML the model is shown (cut at a character).
    max_model_html_bytes: int = 32 * 1024
    #: Largest model reply body read, and the model call's time limit in seconds.
    max_reply_bytes: int = 256 * 1024
    model_timeout: float = 30.0
    #: Deepest nesting accepted in the model's JSON.
    max_reply_depth: int = 16
    #: Canvas bounds (the template service's LITHO_TEMPLATE_MAX_DIMENSION).
    max_dimension: int = 5000
    #: Longest text of ``set_text``, a badge or a text element, in characters.
    max_text_chars: int = 2000
    #: Longest CSS value, and most properties in one ``styles`` object.
    max_style_value_chars: int = 500
    max_style_properties: int = 32
    #: Most entries of one ``swap_palette`` map.
    max_palette_entries: int = 32
    #: Most background variants one prompt asks for.
    max_variants: int = 10
