"""Template documents and the rules a template must satisfy to be saved."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from litho import jsonlimits
from litho.errors import FieldError, InvalidArgument

#: JSON limits when a caller passes none (the defaults of the settings
#: LITHO_TEMPLATE_JSON_MAX_DEPTH and LITHO_TEMPLATE_JSON_MAX_NUMBER_CHARS).
DEFAULT_JSON_LIMITS = jsonlimits.JsonLimits(
    depth_setting="LITHO_TEMPLATE_JSON_MAX_DEPTH",
    number_setting="LITHO_TEMPLATE_JSON_MAX_NUMBER_CHARS",
)


#: The setting that bounds every JSON text of variables (and data) received.
VARIABLES_BYTES_SETTING = "LITHO_TEMPLATE_MAX_VARIABLES_BYTES"
#: The setting that bounds the data of data sources and bindings' mappings.
DATA_BYTES_SETTING = "LITHO_TEMPLATE_MAX_DATA_BYTES"


@dataclass(frozen=True)
class Limits:
    max_html_bytes: int
    max_dimension: int
    max_variables_bytes: int
    max_output_bytes: int
    #: Nesting, Unicode and number limits of every JSON value received.
    json: jsonlimits.JsonLimits = DEFAULT_JSON_LIMITS
    #: Most data sources one template declares (LITHO_TEMPLATE_MAX_DATA_SOURCES).
    max_data_sources: int = 5
    #: Largest data JSON text (fetched sources, a mapping's data) accepted.
    max_data_bytes: int = 1024 * 1024
    #: Most templates one tenant holds (LITHO_TEMPLATE_MAX_PER_TENANT).
    max_per_tenant: int = 10_000


@dataclass(frozen=True)
class Spec:
    """The editable fields; ``None`` means "not given" (keep on update)."""

    name: str | None = None
    html: str | None = None
    width: int | None = None
    height: int | None = None
    sample_variables: dict[str, Any] | None = None
    #: Variable definitions as JSON (validated by ``_variables.parse_definitions``).
    variable_definitions: list[dict[str, Any]] | None = None
    #: Root variables ``html`` reads; derived on save, never sent by clients.
    discovered_variables: list[str] | None = None
    #: Labels for finding templates (``GET /v1/templates?tag=``).
    tags: list[str] | None = None
    #: Declared data sources as JSON (validated by ``_data_sources.parse_data_sources``).
    data_sources: list[dict[str, Any]] | None = None


@dataclass(frozen=True)
class Template:
    id: str
    tenant_id: str
    name: str
    html: str
    width: int
    height: int
    sample_variables: dict[str, Any]
    version: int
    create_time: datetime
    update_time: datetime
    variable_definitions: list[dict[str, Any]] = field(default_factory=list)
    discovered_variables: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    #: Normalised data sources (``_data_sources``); the root variable
    #: ``data`` is theirs when there are any.
    data_sources: list[dict[str, Any]] = field(default_factory=list)

    @property
    def input_variables(self) -> list[str]:
        """The discovered variables a caller gives: ``data`` is filled by
        the data sources when the template declares any."""
        if not self.data_sources:
            return self.discovered_variables
        return [name for name in self.discovered_variables if name != "data"]

    def with_spec(self, spec: Spec) -> Template:
        return replace(
            self,
            name=spec.name if spec.name is not None else self.name,
            html=spec.html if spec.html is not None else self.html,
            width=spec.width if spec.width is not None else self.width,
            height=spec.height if spec.height is not None else self.height,
            sample_variables=(
                spec.sample_variables
                if spec.sample_variables is not None
                else self.sample_variables
            ),
            variable_definitions=(
                spec.variable_definitions
                if spec.variable_definitions is not None
                else self.variable_definitions
            ),
            discovered_variables=(
                spec.discovered_variables
                if spec.discovered_variables is not None
                else self.discovered_variables
            ),
            tags=spec.tags if spec.tags is not None else self.tags,
            data_sources=(spec.data_sources if spec.data_sources is not None
                          else self.data_sources),
        )


def parse_json_object(
    text: str, *, field: str, max_bytes: int,
    json_limits: jsonlimits.JsonLimits = DEFAULT_JSON_LIMITS,
    setting: str = VARIABLES_BYTES_SETTING,
) -> dict[str, Any]:
    """Parse a JSON object sent as text; an empty string is an empty object."""
    value = _parse_json(text or "{}", field=field, max_bytes=max_bytes, limits=json_limits,
                        setting=setting)
    if not isinstance(value, dict):
        raise InvalidArgument(
            f"{field} must be a JSON object", errors=[FieldError(field, "must be an object")]
        )
    return value


def parse_json_list(
    text: str, *, field: str, max_bytes: int,
    json_limits: jsonlimits.JsonLimits = DEFAULT_JSON_LIMITS,
    setting: str = VARIABLES_BYTES_SETTING,
) -> list[Any]:
    """Parse a JSON array sent as text; an empty string is an empty array.
    ``setting`` is the one named when the text is over ``max_bytes``."""
    value = _parse_json(text or "[]", field=field, max_bytes=max_bytes, limits=json_limits,
                        setting=setting)
    if not isinstance(value, list):
        raise InvalidArgument(
            f"{field} must be a JSON array", errors=[FieldError(field, "must be an array")]
        )
    return value


def parse_json_value(
    text: str, *, field: str, max_bytes: int,
    json_limits: jsonlimits.JsonLimits = DEFAULT_JSON_LIMITS,
    setting: str = VARIABLES_BYTES_SETTING,
) -> Any:
    """Parse any JSON value sent as text; an empty string is null."""
    return _parse_json(text or "null", field=field, max_bytes=max_bytes, limits=json_limits,
                       setting=setting)


def _parse_json(text: str, *, field: str, max_bytes: int, limits: jsonlimits.JsonLimits,
                setting: str = VARIABLES_BYTES_SETTING) -> Any:
    """Strict JSON within ``limits``: whatever is accepted here is stored and
    sent on, so it must be readable by every later layer (gRPC callers other
    than the gateway exist, so the gateway's own check is not enough)."""
    if len(text.encode("utf-8", "surrogatepass")) > max_bytes:
        raise InvalidArgument(
            f"{field} is larger than {max_bytes} bytes ({setting})",
            errors=[FieldError(field, f"at most {max_bytes} bytes ({setting})")],
        )
    try:
        return jsonlimits.loads(text, limits)
    except jsonlimits.JsonLimitError as exc:
        raise InvalidArgument(
            f"{field}{exc.path} {exc.problem}",
            errors=[FieldError(field + exc.path, exc.problem)],
        ) from None
    except ValueError as exc:
        raise InvalidArgument(
            f"{field} is not valid JSON", errors=[FieldError(field, str(exc))]
        ) from exc


#: At most this many tags a template, each 1 to MAX_TAG_CHARS characters.
MAX_TAGS = 20
MAX_TAG_CHARS = 50


def check_tags(tags: list[str]) -> list[FieldError]:
    problems = []
    if len(tags) > MAX_TAGS:
        problems.append(FieldError("tags", f"at most {MAX_TAGS} tags"))
    for i, tag in enumerate(tags[:MAX_TAGS]):
        if not (1 <= len(tag) <= MAX_TAG_CHARS) or tag != tag.strip() or not tag.isprintable():
            problems.append(FieldError(f"tags[{i}]", f"a tag is 1 to {MAX_TAG_CHARS} printable "
                                       "characters with no leading or trailing space"))
    if len(set(tags)) != len(tags):
        problems.append(FieldError("tags", "each tag at most once"))
    return problems


def check_spec(spec: Spec, limits: Limits, *, creating: bool) -> None:
    """Collect every problem with ``spec`` and raise them together."""
    problems: list[FieldError] = []
    if creating:
        for name in ("name", "html", "width", "height"):
            if getattr(spec, name) is None:
                problems.append(FieldError(name, "is required"))
    if spec.name is not None and not (1 <= len(spec.name.strip()) <= 200):
        problems.append(FieldError("name", "must be 1 to 200 characters"))
    if spec.html is not None:
        size = len(spec.html.encode())
        if size == 0:
            problems.append(FieldError("html", "must not be empty"))
        elif size > limits.max_html_bytes:
            problems.append(FieldError("html", f"must be at most {limits.max_html_bytes} bytes "
                                       f"(LITHO_TEMPLATE_MAX_HTML_BYTES); it is {size}"))
    if spec.tags is not None:
        problems += check_tags(spec.tags)
    for dim in ("width", "height"):
        value = getattr(spec, dim)
        if value is not None and not (1 <= value <= limits.max_dimension):
            problems.append(FieldError(dim, f"must be between 1 and {limits.max_dimension} "
                                       "(LITHO_TEMPLATE_MAX_DIMENSION)"))
    if problems:
        raise InvalidArgument("the template is invalid", errors=problems)
