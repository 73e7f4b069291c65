"""Data sources a template declares, and what a render asks the caller to fetch.

A template may declare up to ``LITHO_TEMPLATE_MAX_DATA_SOURCES`` named
sources::

    {"name": "inventory", "url": "https://api.example.com/items/{{ sku }}",
     "method": "GET", "headers": {"Accept": "application/json"}, "ttlSeconds": 60}

``url``, header values and ``body`` are template strings of the language:
their tags are checked when the template is saved, and expanded with the
render's variables when a render needs the source. Header values and the
body are expanded as plain text (no HTML escaping). In the URL every
output is percent-encoded as a URI component (``uri_component``: only
``A-Z a-z 0-9 - . _ ~`` are kept), so a variable stays inside the path
segment, query value or host label its tag is in; ``{{ raw x }}`` or
``{{ x | raw }}`` writes a value that carries URL syntax as it is. The
template then reads the fetched JSON as ``data.<name>``: a template with
data sources owns the root variable ``data``.

``parse_data_sources`` validates and normalises the declarations on save
(``dataSources[i].<field>`` paths); ``pending_source`` expands one for the
caller to fetch (``dataSources.<name>.<field>`` paths). Fetching is not done
here: the renderer asks the binding service, which goes through the guard.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol
from urllib.parse import quote, unquote, urlsplit

from litho.errors import FieldError, InvalidArgument, OutboundDenied
from litho.jsonlimits import safe_text
from litho.outbound import AllowList, check_outbound_headers, check_url
from services.template._lang import outside_tags

#: The root variable the data sources' data is given under.
DATA_VARIABLE: Final = "data"
MAX_SOURCES_SETTING: Final = "LITHO_TEMPLATE_MAX_DATA_SOURCES"
MAX_URL_CHARS: Final = 2000
#: Longest URL once its tags are expanded (the declared one is at most 2000).
MAX_EXPANDED_URL_CHARS: Final = 8000
MAX_HEADERS: Final = 20
#: Largest body, as declared and once expanded, in UTF-8 bytes.
MAX_BODY_BYTES: Final = 64 * 1024
MAX_TTL_SECONDS: Final = 86_400
DEFAULT_TTL_SECONDS: Final = 60
METHODS: Final = ("GET", "POST")
_KEYS: Final = ("name", "url", "method", "headers", "body", "ttlSeconds")
_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}", re.ASCII)
_SCHEMES: Final = ("http://", "https://")
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")
#: What ``urlsplit`` gives as a host: a DNS name or an address (IPv6
#: without its brackets).
_HOST: Final = re.compile(r"[A-Za-z0-9._-]+|[0-9A-Fa-f:.]+", re.ASCII)
#: RFC 3986 reserved and unreserved characters, and "%" (escapes kept).
_URL_SAFE: Final = "!#$%&'()*+,/:;=?@[]~-._"
#: The most JSON text a spec's ``dataSources`` may take: each source at its
#: limits (URL, 20 headers of ~1100 characters, a 64 KiB body) plus room
#: for escapes. The per-field rules are the real bound; this one stops a
#: huge text before it is parsed.
_BYTES_PER_SOURCE: Final = 160 * 1024

#: Checks a template string; answers its problems with field ``html`` and
#: messages that start ``line L, column C: `` (``LangExpander.check``).
Check = Callable[[str], list[FieldError]]
class Render(Protocol):
    """Expands a template string as plain text with the render's variables
    (with ``url``, each output but ``raw`` ones URI-encoded); raises
    InvalidArgument naming ``field``."""

    def __call__(self, text: str, field: str, *, url: bool = False) -> str: ...
_USERINFO: Final = ("must not hold a user name or password (user:password@host): a URL is "
                    "stored and shown in the clear; send a key in a header instead")
_DOT_SEGMENT: Final = ("has a '.' or '..' path segment, which the client would resolve "
                       "into another path; write the path it stands for")
_DENIED: Final = ("is not allowed: Litho does not fetch from private, loopback or other "
                  "non-public addresses unless LITHO_OUTBOUND_ALLOW lists them")


def max_json_bytes(max_sources: int) -> int:
    return max(1, max_sources) * _BYTES_PER_SOURCE


@dataclass(frozen=True)
class PendingSource:
    """A declared source the render needs, expanded with its variables."""

    name: str
    url: str
    method: str
    headers: dict[str, str]
    body: str
    ttl_seconds: int


def parse_data_sources(raw: Any, check: Check, *, max_sources: int,
                       allow: AllowList | None = None) -> list[dict[str, Any]]:
    """The normalised declarations (``name``, ``url``, ``method``,
    ``headers``, ``ttlSeconds``, and ``body`` for a POST that has one);
    raises InvalidArgument with every problem, each at ``dataSources[i].<field>``.
    With ``allow`` (the service's ``LITHO_OUTBOUND_ALLOW``), a URL whose
    scheme, host and port have no tag is also put to ``check_url`` (an IP
    literal that is not public, a ``localhost`` name); without it that is
    left to the guard at fetch time."""
    if not isinstance(raw, list):
        raise InvalidArgument("dataSources must be an array",
                              errors=[FieldError("dataSources", "must be an array")])
    if len(raw) > max_sources:
        raise InvalidArgument("too many data sources", errors=[FieldError(
            "dataSources", f"at most {max_sources} data sources ({MAX_SOURCES_SETTING}); "
                           f"got {len(raw)}")])
    errors: list[FieldError] = []
    parsed: list[dict[str, Any]] = []
    seen: set[str] = set()
    for index, item in enumerate(raw):
        path = f"dataSources[{index}]"
        source = _source(item, path, check, errors, allow)
        if source is None:
            continue
        if source["name"] in seen:
            errors.append(FieldError(f"{path}.name",
                                     f"'{source['name']}' is declared twice"))
        seen.add(source["name"])
        parsed.append(source)
    if errors:
        raise InvalidArgument("the data sources are invalid", errors=errors)
    return parsed


def _source(item: Any, path: str, check: Check, errors: list[FieldError],
            allow: AllowList | None) -> dict[str, Any] | None:
    if not isinstance(item, dict):
        errors.append(FieldError(path, "must be an object"))
        return None
    before = len(errors)
    for key in item:
        if key not in _KEYS:
            errors.append(FieldError(f"{path}.{_shown(str(key))}",
                                     "unknown property; expected one of " + ", ".join(_KEYS)))
    name = item.get("name")
    if not isinstance(name, str) or _NAME.fullmatch(name) is None:
        errors.append(FieldError(f"{path}.name", "must be a name usable in a template: 1 to 64 "
                                                 "letters, digits or _, not starting with a "
                                                 "digit"))
    url = item.get("url")
    if not isinstance(url, str) or not url:
        errors.append(FieldError(f"{path}.url", "is required: an http(s) URL, which may use "
                                                "{{ }} tags of the variables"))
    else:
        errors.extend(_url_problems(url, f"{path}.url", check, allow))
    method = item.get("method", "GET")
    if method not in METHODS:
        errors.append(FieldError(f"{path}.method", "must be GET or POST"))
    headers = _headers(item.get("headers", {}), f"{path}.headers", check, errors)
    body = item.get("body")
    if body is not None:
        if not isinstance(body, str):
            errors.append(FieldError(f"{path}.body", "must be text"))
        elif method == "GET":
            errors.append(FieldError(f"{path}.body", "a body is sent only with method POST"))
        elif len(body.encode("utf-8", "surrogatepass")) > MAX_BODY_BYTES:
            errors.append(FieldError(f"{path}.body", f"must be at most {MAX_BODY_BYTES} bytes"))
        else:
            errors.extend(_tag_problems(body, f"{path}.body", check))
    ttl = item.get("ttlSeconds", DEFAULT_TTL_SECONDS)
    if (not isinstance(ttl, int) or isinstance(ttl, bool)
            or not 0 <= ttl <= MAX_TTL_SECONDS):
        errors.append(FieldError(f"{path}.ttlSeconds",
                                 f"must be a whole number of seconds from 0 to {MAX_TTL_SECONDS}"))
    if len(errors) > before:
        return None
    out: dict[str, Any] = {"name": name, "url": url, "method": method,
                           "headers": headers or {}, "ttlSeconds": ttl}
    if body is not None:
        out["body"] = body
    return out


def _headers(raw: Any, path: str, check: Check,
             errors: list[FieldError]) -> dict[str, str] | None:
    if not isinstance(raw, dict):
        errors.append(FieldError(path, "must be an object of header names to text values"))
        return None
    before = len(errors)
    for name, value in raw.items():
        if not isinstance(value, str):
            errors.append(FieldError(f"{path}.{_shown(name)}", "must be text"))
    if len(errors) > before:
        return None
    try:
        headers = check_outbound_headers(raw, path=path, max_headers=MAX_HEADERS)
    except InvalidArgument as exc:
        errors.extend(exc.errors or [FieldError(path, exc.message)])
        return None
    for name, value in headers.items():
        errors.extend(_tag_problems(value, f"{path}.{_shown(name)}", check))
    return headers


def _url_problems(url: str, field: str, check: Check,
                  allow: AllowList | None) -> list[FieldError]:
    if len(url) > MAX_URL_CHARS:
        return [FieldError(field, f"must be at most {MAX_URL_CHARS} characters")]
    literal = url.split("{{", 1)[0]
    if not literal.lower().startswith(_SCHEMES):
        return [FieldError(field, "must start with http:// or https:// (before any {{ }} tag)")]
    if _CONTROL.search(outside_tags(url)) is not None:
        return [FieldError(field, "must not contain control characters or line breaks")]
    problems = _tag_problems(url, field, check)
    if problems:
        return problems
    # A tag's output cannot hold "@" (it is URI-encoded), so the text around
    # the tags tells whether the URL has userinfo; a raw tag is checked once
    # expanded.
    if "@" in urlsplit(encoded_url(outside_tags(url, "x"))).netloc:
        return [FieldError(field, _USERINFO)]
    if "{{" not in url:
        problem = _absolute_url_problem(encoded_url(url))
        if problem:
            return [FieldError(field, problem)]
    authority = (_literal_authority(literal, whole="{{" not in url)
                 if allow is not None else "")
    if allow is not None and authority:
        try:
            check_url(authority, allow)
        except OutboundDenied:
            return [FieldError(field, _DENIED)]
        except (ValueError, TypeError, UnicodeError):
            return [FieldError(field, "is not a valid URL")]
    return []


def _literal_authority(literal: str, *, whole: bool) -> str:
    """``scheme://host[:port]/`` of a URL whose text before its first tag
    is ``literal`` (the whole URL when ``whole``), or ``""`` when a tag
    writes part of the host or port."""
    scheme, _, rest = literal.partition("://")
    end = min((i for i in (rest.find(c) for c in "/?#\\") if i >= 0), default=-1)
    if end < 0 and not whole:
        return ""
    authority = rest if end < 0 else rest[:end]
    return encoded_url(f"{scheme}://{authority}/")


def _tag_problems(text: str, field: str, check: Check) -> list[FieldError]:
    if "{{" not in text and "{%" not in text:
        return []
    return [FieldError(field, e.message) for e in check(text)]


def _absolute_url_problem(url: str) -> str:
    """Why ``url`` (as ``encoded_url`` leaves it) is not an absolute http(s)
    URL with a host, without userinfo or dot segments, or ``""``."""
    if len(url) > MAX_EXPANDED_URL_CHARS:
        return f"is longer than {MAX_EXPANDED_URL_CHARS} characters"
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 -- raises ValueError for a bad port
    except ValueError as exc:
        return f"is not a valid URL: {exc}"
    if parts.scheme.lower() not in ("http", "https"):
        return "must be an http:// or https:// URL"
    if "@" in parts.netloc:
        return _USERINFO
    if not host:
        return "must name a host"
    if _HOST.fullmatch(host) is None:
        return (f"names the host {safe_text(unquote(host))[:100]!r}, which is not a host name "
                "(ASCII letters, digits, '-' and '.'; write an international name in its "
                "xn-- form)")
    if any(unquote(segment) in (".", "..") for segment in parts.path.split("/")):
        return _DOT_SEGMENT
    return ""


def encoded_url(url: str) -> str:
    """``url`` with the characters a URL cannot hold (spaces, control
    characters, quotes, ``<>``, non-ASCII, …) percent-encoded as a browser
    does; reserved characters (``/?#&=+:@``) and existing ``%XX`` escapes are
    kept: the URL template's own text, and a ``raw`` output, keep their
    meaning (a tag's other outputs are already URI-encoded)."""
    return quote(url, safe=_URL_SAFE)


def pending_source(source: dict[str, Any], render: Render) -> PendingSource:
    """``source`` with its URL (every output URI-encoded but ``raw`` ones),
    header values and body (as plain text) expanded by ``render``.
    The expanded URL must be an absolute http(s) URL without userinfo or dot
    segments, the headers must still meet the outbound rules (a variable may
    hold a line break) and the body its size: each refused naming
    ``dataSources.<name>.<field>``."""
    name = source["name"]
    path = f"dataSources.{name}"
    url = encoded_url(render(source["url"], f"{path}.url", url=True))
    problem = _absolute_url_problem(url)
    if problem:
        # A URL with userinfo holds a secret: not echoed.
        shown = "" if problem == _USERINFO else f" {_clipped(url)!r}"
        message = f"the expanded URL{shown} {problem}"
        raise InvalidArgument(f"data source {name!r}: {message}",
                              errors=[FieldError(f"{path}.url", message)])
    headers = {key: render(value, f"{path}.headers.{key}")
               for key, value in (source.get("headers") or {}).items()}
    if headers:
        headers = check_outbound_headers(headers, path=f"{path}.headers",
                                         max_headers=MAX_HEADERS)
    body = source.get("body")
    body_text = render(body, f"{path}.body") if body else ""
    if len(body_text.encode("utf-8", "surrogatepass")) > MAX_BODY_BYTES:
        raise InvalidArgument(f"data source {name!r}: the body is too large", errors=[FieldError(
            f"{path}.body", f"expanded to more than {MAX_BODY_BYTES} bytes")])
    return PendingSource(name=name, url=url, method=source.get("method", "GET"),
                         headers=headers, body=body_text,
                         ttl_seconds=int(source.get("ttlSeconds", DEFAULT_TTL_SECONDS)))


def reserved_problems(data_sources: list[dict[str, Any]],
                      definitions: list[dict[str, Any]]) -> list[FieldError]:
    """A variable definition named ``data`` on a template with data sources."""
    if not data_sources:
        return []
    return [FieldError(f"variables[{i}].name",
                       f"'{DATA_VARIABLE}' is reserved for the template's data sources")
            for i, d in enumerate(definitions) if d.get("name") == DATA_VARIABLE]


def _clipped(text: str) -> str:
    text = safe_text(text)
    return text if len(text) <= 200 else text[:200] + "…"


def _shown(name: str) -> str:
    text = safe_text(name).replace("\x00", "\\u0000")
    return text if len(text) <= 60 else text[:40] + "…"
