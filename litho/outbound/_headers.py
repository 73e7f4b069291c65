"""Which request headers a user may set on a fetch Litho makes for them.

Data bindings and template data sources let a user name extra headers for
their source. Those headers go to someone else's server from ours, so they are
held to rules that keep a request well-formed and keep secrets where they are
encrypted: header names are RFC 7230 tokens, values are short single lines,
and the headers that carry credentials or frame the message are refused.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

from litho.errors import FieldError, InvalidArgument
from litho.jsonlimits import describe_text, safe_text

#: Longest header value accepted, in characters.
MAX_HEADER_VALUE_CHARS: Final = 1000
#: Longest header name accepted, in characters.
MAX_HEADER_NAME_CHARS: Final = 100

# RFC 7230 section 3.2.6: token = 1*tchar.
_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Control characters other than HTAB (field-content, RFC 7230 section 3.2),
# the C1 controls (U+0080-U+009F, NEL among them) and the Unicode line and
# paragraph separators: none is framing on the wire (values go out as UTF-8
# and CR/LF are refused), but a log or a client that reads them as line
# breaks would split the value.
_CONTROL: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
# Credentials have their own, encrypted field; a header would be stored in the clear.
_SECRET: Final = frozenset({"authorization", "cookie", "proxy-authorization"})
# Framing and routing are the HTTP client's business, not the caller's.
_FRAMING: Final = frozenset({"host", "content-length", "transfer-encoding", "connection"})


def check_outbound_headers(
    headers: Mapping[str, str], *, path: str, max_headers: int = 20
) -> dict[str, str]:
    """Return ``headers`` as a plain dict, or raise :class:`InvalidArgument`
    with one :class:`FieldError` per bad header (``{path}.{name}``).

    Names compare case-insensitively, so two spellings of one name are refused
    as a duplicate.
    """
    if len(headers) > max_headers:
        raise InvalidArgument(
            f"{path}: at most {max_headers} headers are allowed, got {len(headers)}",
            errors=[FieldError(path, f"at most {max_headers} headers are allowed, "
                                     f"got {len(headers)}")])
    errors: list[FieldError] = []
    seen: set[str] = set()
    out: dict[str, str] = {}
    for name, value in headers.items():
        problem = _name_problem(name) or _value_problem(value)
        lower = name.lower()
        if not problem and lower in seen:
            problem = "the header is given twice (header names are case-insensitive)"
        field = f"{path}.{_shown(name)}"
        if problem:
            errors.append(FieldError(field, problem))
            continue
        seen.add(lower)
        out[name] = value
    if errors:
        raise InvalidArgument(
            f"{errors[0].field}: {errors[0].message}"
            + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""),
            errors=errors)
    return out


def _name_problem(name: str) -> str:
    if not name:
        return "a header name must not be empty"
    if len(name) > MAX_HEADER_NAME_CHARS:
        return f"a header name must be at most {MAX_HEADER_NAME_CHARS} characters"
    if _TOKEN.fullmatch(name) is None:
        return ("a header name may hold only letters, digits and !#$%&'*+-.^_`|~ "
                "(an RFC 7230 token)")
    lower = name.lower()
    if lower in _SECRET:
        return (f"the {name} header is not allowed: put secrets in credentials, "
                "which are stored encrypted")
    if lower in _FRAMING:
        return f"the {name} header is set by Litho and cannot be given"
    return ""


def _value_problem(value: str) -> str:
    if len(value) > MAX_HEADER_VALUE_CHARS:
        return (f"the header value must be at most {MAX_HEADER_VALUE_CHARS} characters "
                f"(got {len(value)})")
    if _CONTROL.search(value) is not None:
        return ("the header value must not contain CR, LF, NUL or other control characters "
                "(C0 or C1), nor U+2028/U+2029 line or paragraph separators")
    unicode_problem = describe_text(value)
    if unicode_problem:
        return f"the header value {unicode_problem}"
    return ""


def _shown(name: str) -> str:
    """``name`` as it may appear in a field path: valid Unicode, short, no NUL."""
    text = safe_text(name).replace("\x00", "\\u0000")
    return text if len(text) <= 60 else text[:40] + "…"
