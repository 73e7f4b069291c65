"""The rules a binding's fields must satisfy to be stored (docs: "Bindings").

Each check raises :class:`litho.errors.InvalidArgument` whose field errors name
the field (``dataSource.url``, ``mapping.price``) and say what is wrong and
what would be right; a bad value is a 422, never a crash, whatever it holds
(lone surrogates, NUL, megabytes). Every check takes the protobuf message or
a plain mapping of it (camelCase or snake_case keys) and answers plain data,
as stored.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from yarl import URL

from litho import jsonlimits
from litho.errors import FieldError, InvalidArgument, OutboundDenied
from litho.outbound import AllowList, check_outbound_headers, check_url
from services.binding._fetch import credential_headers
from services.binding._schedule import check_cron
from services.binding._settings import DEFAULT_JSON_LIMITS

MAX_NAME_CHARS: Final = 200
MAX_URL_CHARS: Final = 2000
MAX_BODY_BYTES: Final = 64 * 1024
MAX_HEADERS: Final = 20
MAX_CREDENTIAL_CHARS: Final = 4096
MAX_MAPPING_ENTRIES: Final = 100
MAX_VARIABLE_CHARS: Final = 200
MAX_EXPRESSION_CHARS: Final = 2000
MAX_DEFAULTS_BYTES: Final = 64 * 1024
MAX_TTL_SECONDS: Final = 30 * 24 * 3600
#: ``ttlSeconds`` of a policy given without a type on an http source.
DEFAULT_TTL_SECONDS: Final = 300

SOURCE_TYPES: Final = ("http", "static", "push")
METHODS: Final = ("GET", "POST")
CREDENTIAL_TYPES: Final = ("bearer", "basic", "header")
POLICY_TYPES: Final = ("ttl", "cron", "push", "manual")
ON_ERROR: Final = ("serve_stale", "serve_error", "serve_default")

VARIABLE_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
#: Control characters in a name, a URL or a header (HTAB aside).
_CONTROL: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
#: The header names a credential of type header may use though a source's
#: own headers may not (they are sealed there): the ones bearer and basic
#: credentials send.
_SEALED_HEADERS: Final = frozenset(
    name.lower() for name in credential_headers({"type": "bearer", "token": "x"}))
_DENIED: Final = ("is not allowed: Litho does not fetch from private, loopback or other "
                  "non-public addresses unless LITHO_OUTBOUND_ALLOW lists them")


def _fail(errors: list[FieldError]) -> InvalidArgument:
    first = errors[0]
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return InvalidArgument(f"{first.field}: {first.message}{more}", errors=errors)


def _invalid(field: str, message: str) -> InvalidArgument:
    return _fail([FieldError(field, message)])


def _get(obj: Any, camel: str, snake: str, default: Any = "") -> Any:
    if isinstance(obj, Mapping):
        if camel in obj:
            return obj[camel]
        return obj.get(snake, default)
    return getattr(obj, snake, default)


def _text(value: Any, field: str, errors: list[FieldError], *, limit: int,
          control: bool = False) -> str:
    """``value`` if it is a string within ``limit`` characters and valid
    Unicode (and, unless ``control``, without control characters); else
    records why and answers ``""``."""
    if value is None:
        return ""
    if not isinstance(value, str):
        errors.append(FieldError(field, "must be a string"))
        return ""
    if len(value) > limit:
        errors.append(FieldError(field, f"must be at most {limit} characters, got {len(value)}"))
        return ""
    problem = jsonlimits.describe_text(value)
    if problem:
        errors.append(FieldError(field, problem))
        return ""
    if "\x00" in value or (not control and _CONTROL.search(value)):
        errors.append(FieldError(field, "must not contain control characters (CR, LF, NUL, …)"))
        return ""
    return value


def check_name(name: Any) -> str:
    """A binding's name: 1–200 characters, not blank. Answers it unchanged."""
    errors: list[FieldError] = []
    text = _text(name, "name", errors, limit=MAX_NAME_CHARS)
    if errors:
        raise _fail(errors)
    if not text.strip():
        raise _invalid("name", f"is required (1–{MAX_NAME_CHARS} characters)")
    return text


def check_data_source(ds: Any, *, path: str = "dataSource",
                      allow: AllowList | None = None) -> dict[str, Any]:
    """``{type, url, method, headers, body}`` of a source, every rule checked.

    ``allow`` is the outbound allow-list (``LITHO_OUTBOUND_ALLOW``): a literal
    private or loopback address in the URL is refused unless it lists it.
    Host names are vetted when the source is fetched.
    """
    errors: list[FieldError] = []
    kind = _text(_get(ds, "type", "type"), f"{path}.type", errors, limit=20)
    if not errors and kind not in SOURCE_TYPES:
        errors.append(FieldError(f"{path}.type", (
            "is required: http, static or push" if not kind else
            f"must be http, static or push, not {kind!r}")))
    url = _text(_get(ds, "url", "url"), f"{path}.url", errors, limit=MAX_URL_CHARS)
    method_in = _text(_get(ds, "method", "method"), f"{path}.method", errors, limit=20)
    method = method_in.upper() or "GET"
    if method not in METHODS:
        errors.append(FieldError(f"{path}.method", f"must be GET or POST, not {method_in!r}"))
    body = _text(_get(ds, "body", "body"), f"{path}.body", errors, limit=MAX_BODY_BYTES,
                 control=True)
    if body and len(body.encode("utf-8")) > MAX_BODY_BYTES:
        errors.append(FieldError(f"{path}.body", f"must be at most {MAX_BODY_BYTES} bytes"))
    headers_in = _get(ds, "headers", "headers", None) or {}
    headers: dict[str, str] = {}
    if not isinstance(headers_in, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers_in.items()):
        errors.append(FieldError(f"{path}.headers", "must be an object of strings"))
    else:
        try:
            headers = check_outbound_headers(headers_in, path=f"{path}.headers",
                                             max_headers=MAX_HEADERS)
        except InvalidArgument as exc:
            errors.extend(exc.errors)
    if kind == "push":
        for name, given in (("url", url), ("body", body), ("headers", headers)):
            if given:
                errors.append(FieldError(f"{path}.{name}", (
                    "must be empty for a push source: its data is pushed to the "
                    "binding's pushUrl")))
    elif kind in SOURCE_TYPES:
        if body and method != "POST":
            errors.append(FieldError(f"{path}.body", "is only sent with method POST"))
        _check_source_url(url, f"{path}.url", allow, errors)
    if errors:
        raise _fail(errors)
    return {"type": kind, "url": url, "method": method, "headers": headers, "body": body}


def _check_source_url(url: str, field: str, allow: AllowList | None,
                      errors: list[FieldError]) -> None:
    if any(e.field == field for e in errors):
        return
    if not url:
        errors.append(FieldError(field, "is required for http and static sources"))
        return
    if url != url.strip() or any(c.isspace() for c in url):
        errors.append(FieldError(field, "must not contain spaces (percent-encode them as %20)"))
        return
    try:
        parsed = URL(url)
        scheme, host = parsed.scheme.lower(), parsed.raw_host
    except (ValueError, TypeError, UnicodeError):
        errors.append(FieldError(field, "is not a valid URL"))
        return
    if scheme not in ("http", "https") or not parsed.is_absolute():
        errors.append(FieldError(field, "must be an absolute http:// or https:// URL"))
        return
    if not host:
        errors.append(FieldError(field, "must name a host"))
        return
    if "@" in (parsed.raw_authority or ""):
        # aiohttp would send it as Authorization: Basic, and the URL is stored
        # and answered in the clear.
        errors.append(FieldError(field, (
            "must not hold a user name or password (user:password@): put credentials in "
            "credentials, which are stored encrypted")))
        return
    try:
        check_url(parsed, allow)
    except OutboundDenied:
        errors.append(FieldError(field, _DENIED))
    except (ValueError, TypeError, UnicodeError):
        errors.append(FieldError(field, "is not a valid URL"))


def check_credentials(c: Any, *, path: str) -> dict[str, str]:
    """The credentials as stored (sealed): ``{"type": "bearer", "token"}``,
    ``{"type": "basic", "username", "password"}`` or ``{"type": "header",
    "headerName", "headerValue"}``."""
    errors: list[FieldError] = []
    kind = _text(_get(c, "type", "type"), f"{path}.type", errors, limit=20)
    if errors:
        raise _fail(errors)
    if kind not in CREDENTIAL_TYPES:
        raise _invalid(f"{path}.type", (
            "is required: bearer, basic or header" if not kind else
            f"must be bearer, basic or header, not {kind!r}"))

    def required(camel: str, snake: str, *, allow_empty: bool = False) -> str:
        field = f"{path}.{camel}"
        before = len(errors)
        value = _text(_get(c, camel, snake), field, errors, limit=MAX_CREDENTIAL_CHARS)
        if len(errors) == before and not value and not allow_empty:
            errors.append(FieldError(field, f"is required for {kind} credentials"))
        return value

    out: dict[str, str] = {"type": kind}
    if kind == "bearer":
        out["token"] = required("token", "token")
    elif kind == "basic":
        out["username"] = required("username", "username")
        out["password"] = required("password", "password", allow_empty=True)
        if ":" in out["username"]:
            errors.append(FieldError(f"{path}.username",
                                     "must not contain ':' (HTTP Basic joins user:password)"))
    else:
        name = required("headerName", "header_name")
        out["headerName"] = name
        out["headerValue"] = required("headerValue", "header_value")
        if name and name.lower() not in _SEALED_HEADERS:
            # The name rules of every header Litho sends for a user (the
            # value may be longer here: tokens are).
            try:
                check_outbound_headers({name: ""}, path=f"{path}.headerName")
            except InvalidArgument as exc:
                errors.extend(FieldError(f"{path}.headerName", e.message) for e in exc.errors)
    if errors:
        raise _fail(errors)
    return out


def check_refresh_policy(rp: Any, *, source_type: str, min_ttl: int,
                         min_cron_interval: float) -> dict[str, Any]:
    """``{type, ttlSeconds, cron, onError}``, defaults filled in: a push
    source refreshes by push, a static one by hand (``manual``), an http one
    every 300 s (``ttl``); ``onError`` is ``serve_stale``."""
    path = "refreshPolicy"
    errors: list[FieldError] = []
    kind = _text(_get(rp, "type", "type"), f"{path}.type", errors, limit=20)
    cron = _text(_get(rp, "cron", "cron"), f"{path}.cron", errors, limit=200)
    on_error = _text(_get(rp, "onError", "on_error"), f"{path}.onError", errors,
                     limit=20) or "serve_stale"
    ttl_in = _get(rp, "ttlSeconds", "ttl_seconds", 0)
    if isinstance(ttl_in, bool) or not isinstance(ttl_in, int):
        errors.append(FieldError(f"{path}.ttlSeconds", "must be a whole number of seconds"))
        ttl_in = 0
    ttl: int = ttl_in or 0
    if errors:
        raise _fail(errors)
    if not kind:
        kind = {"push": "push", "static": "manual"}.get(source_type, "ttl")
        if kind == "ttl" and not ttl:
            ttl = max(DEFAULT_TTL_SECONDS, min_ttl)
    if kind not in POLICY_TYPES:
        errors.append(FieldError(f"{path}.type",
                                 f"must be ttl, cron, push or manual, not {kind!r}"))
    elif source_type == "push" and kind != "push":
        errors.append(FieldError(f"{path}.type", "must be push for a push source"))
    elif kind == "push" and source_type != "push":
        errors.append(FieldError(f"{path}.type", (
            "push is only for a push source (dataSource.type push); use ttl, cron or manual")))
    if on_error not in ON_ERROR:
        errors.append(FieldError(f"{path}.onError", (
            f"must be serve_stale, serve_error or serve_default, not {on_error!r}")))
    if kind == "ttl":
        if not ttl:
            errors.append(FieldError(f"{path}.ttlSeconds", (
                f"is required for a ttl policy ({min_ttl}–{MAX_TTL_SECONDS} seconds)")))
        elif not min_ttl <= ttl <= MAX_TTL_SECONDS:
            errors.append(FieldError(f"{path}.ttlSeconds", (
                f"must be between {min_ttl} (LITHO_BINDING_MIN_TTL_SECONDS) and "
                f"{MAX_TTL_SECONDS} (30 days), got {ttl}")))
    elif ttl:
        errors.append(FieldError(f"{path}.ttlSeconds", "is only for a ttl policy"))
    if kind == "cron":
        try:
            check_cron(cron, min_interval=min_cron_interval, field=f"{path}.cron")
        except InvalidArgument as exc:
            errors.extend(exc.errors)
    elif cron:
        errors.append(FieldError(f"{path}.cron", "is only for a cron policy"))
    if errors:
        raise _fail(errors)
    return {"type": kind, "ttlSeconds": ttl if kind == "ttl" else 0,
            "cron": " ".join(cron.split()) if kind == "cron" else "", "onError": on_error}


def check_mapping_names(mapping: Mapping[str, str]) -> None:
    """1–100 variables, each named ``a`` or ``a.b.c`` (identifiers), none both
    a value and an object (``a`` and ``a.b``), each with an expression of at
    most 2000 characters. The expressions' syntax is the template service's
    to check (EvaluateMapping)."""
    if not isinstance(mapping, Mapping) or not mapping:
        raise _invalid("mapping", (
            "is required: an object of variable name → expression, e.g. "
            "{\"price\": \"items[0].price\"}"))
    if len(mapping) > MAX_MAPPING_ENTRIES:
        raise _invalid("mapping", (
            f"must have at most {MAX_MAPPING_ENTRIES} variables, got {len(mapping)}"))
    errors: list[FieldError] = []
    names: set[str] = set()
    for name, expr in mapping.items():
        shown = jsonlimits.pointer([str(name)])[1:][:MAX_VARIABLE_CHARS]
        field = f"mapping.{shown}"
        if not isinstance(name, str) or len(name) > MAX_VARIABLE_CHARS:
            errors.append(FieldError(field, f"a variable name must be at most "
                                            f"{MAX_VARIABLE_CHARS} characters"))
            continue
        if VARIABLE_NAME.fullmatch(name) is None:
            errors.append(FieldError(field, (
                "is not a variable name: letters, digits and _, not starting with a digit, "
                "dotted for nesting (e.g. product.price)")))
            continue
        names.add(name)
        before = len(errors)
        text = _text(expr, field, errors, limit=MAX_EXPRESSION_CHARS, control=True)
        if len(errors) == before and not text.strip():
            errors.append(FieldError(field, "the expression must not be empty"))
    for name in sorted(names):
        parts = name.split(".")
        for end in range(1, len(parts)):
            parent = ".".join(parts[:end])
            if parent in names:
                errors.append(FieldError(f"mapping.{name}", (
                    f"conflicts with mapping.{parent}: a variable cannot be both a value "
                    "and an object")))
                break
    if errors:
        raise _fail(errors)


def check_defaults(text: str, *,
                   limits: jsonlimits.JsonLimits = DEFAULT_JSON_LIMITS) -> dict[str, Any]:
    """The defaults, a JSON object of at most 64 KiB (``""`` is ``{}``)."""
    if not isinstance(text, str):
        raise _invalid("defaults", "must be JSON object text")
    if not text.strip():
        return {}
    if len(text) > MAX_DEFAULTS_BYTES or len(
            text.encode("utf-8", "surrogatepass")) > MAX_DEFAULTS_BYTES:
        raise _invalid("defaults", f"must be at most {MAX_DEFAULTS_BYTES} bytes of JSON")
    try:
        value = jsonlimits.loads(text, limits)
    except jsonlimits.JsonLimitError as exc:
        raise _invalid("defaults" + exc.path.replace("/", "."), exc.problem) from None
    except ValueError as exc:
        raise _invalid("defaults", f"is not valid JSON ({str(exc)[:200]})") from None
    if not isinstance(value, dict):
        raise _invalid("defaults", f"must be a JSON object, not {_json_kind(value)}")
    return value


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number"
