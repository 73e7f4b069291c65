"""The template service checks the JSON it receives over gRPC itself: the
gateway is not its only caller."""

from __future__ import annotations

import pytest

from litho.errors import InvalidArgument
from litho.jsonlimits import JsonLimits
from litho.template.v1 import template_pb2 as pb
from services.template._model import parse_json_object
from services.template._servicer import spec_from_proto

LIMITS = JsonLimits(max_depth=10, max_number_chars=25,
                    depth_setting="LITHO_TEMPLATE_JSON_MAX_DEPTH",
                    number_setting="LITHO_TEMPLATE_JSON_MAX_NUMBER_CHARS")


@pytest.mark.parametrize(("field", "text", "named", "says"), [
    ("sample_variables_json", '{"a": ' + "[" * 973 + "]" * 973 + "}",
     "sampleVariables/a/0", "LITHO_TEMPLATE_JSON_MAX_DEPTH"),
    ("sample_variables_json", '{"a": ' + "[" * 11 + "]" * 11 + "}",
     "sampleVariables/a/0", "10 levels"),
    ("sample_variables_json", '{"k\\ud800": 1}', "sampleVariables/k", "not valid Unicode"),
    ("sample_variables_json", '{"n": ' + "9" * 4000 + "}", "sampleVariables/n",
     "LITHO_TEMPLATE_JSON_MAX_NUMBER_CHARS"),
    ("variable_definitions_json",
     '[{"name": "x", "type": "object", "defaultValue": ' + "[" * 50 + "]" * 50 + "}]",
     "variables/0/defaultValue", "LITHO_TEMPLATE_JSON_MAX_DEPTH"),
    ("variable_definitions_json", '[{"name": "x\\udfff", "type": "text"}]',
     "variables/0/name", "not valid Unicode"),
])
def test_spec_json_over_a_limit_is_invalid_argument_naming_the_field(
        field: str, text: str, named: str, says: str) -> None:
    spec = pb.TemplateSpec()
    setattr(spec, field, text)
    with pytest.raises(InvalidArgument) as info:
        spec_from_proto(spec, max_variables_bytes=1 << 20, json_limits=LIMITS)
    [error] = info.value.errors
    assert error.field.startswith(named) and says in error.message
    error.message.encode()  # the error itself is valid Unicode
    error.field.encode()


def test_render_variables_are_checked_with_the_default_limits() -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_json_object('{"x": ' + "9" * 4000 + "}", field="variables", max_bytes=1 << 20)
    assert info.value.errors[0].field == "variables/x"
    assert len(info.value.message) < 300
    assert parse_json_object('{"x": 12}', field="variables", max_bytes=100) == {"x": 12}
