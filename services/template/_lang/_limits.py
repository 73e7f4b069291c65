"""The bounds every compile and render stays within.

Each limit names the setting that raises it, so an error can tell the
template author (or the operator) exactly what to change.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

#: The deepest nesting ``max_depth`` may be set to. Parsing recurses about
#: seven Python frames per level and rendering one or two, so a hundred levels
#: stay inside Python's default recursion limit (1000) even when the engine is
#: called from deep in a server stack.
MAX_DEPTH_CEILING = 100

SETTING_NAMES: dict[str, str] = {
    "max_template_bytes": "LITHO_TEMPLATE_MAX_HTML_BYTES",
    "max_loop_iterations": "LITHO_TEMPLATE_MAX_LOOP_ITERATIONS",
    "max_depth": "LITHO_TEMPLATE_MAX_DEPTH",
    "max_steps": "LITHO_TEMPLATE_MAX_STEPS",
    "max_string_length": "LITHO_TEMPLATE_MAX_STRING_LENGTH",
    "max_array_length": "LITHO_TEMPLATE_MAX_ARRAY_LENGTH",
    "max_errors": "LITHO_TEMPLATE_MAX_ERRORS",
}
OUTPUT_SETTING = "LITHO_TEMPLATE_MAX_OUTPUT_BYTES"


@dataclass(frozen=True)
class Limits:
    """Defaults suit social cards and documents of a few pages."""

    #: Largest template (or bare expression) source, in UTF-8 bytes.
    max_template_bytes: int = 512 * 1024
    #: Loop iterations in one render, summed over every loop (nested ones too).
    max_loop_iterations: int = 10_000
    #: Nesting of expressions (parentheses, calls, operators) and of blocks.
    max_depth: int = 64
    #: Expression nodes evaluated in one render; functions also pay one step
    #: per array item and per KiB of text they read or produce.
    max_steps: int = 500_000
    #: Longest string any single operation may produce, in characters.
    max_string_length: int = 1_000_000
    #: Most items any single operation may produce in an array.
    max_array_length: int = 10_000
    #: Most problems ``check`` reports for one source; the rest are summarised.
    max_errors: int = 100

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"Limits.{field.name} must be a positive integer, got {value!r}")
        if self.max_depth > MAX_DEPTH_CEILING:
            raise ValueError(
                f"Limits.max_depth must be at most {MAX_DEPTH_CEILING}, got {self.max_depth}"
            )
