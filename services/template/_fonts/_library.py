"""A tenant's uploaded fonts: checked, stored, listed, deleted, and picked
for the documents that name them.

The bytes go to the blob store under ``fonts/<sha256(tenant)[:32]>/<id>.<ext>``
(a tenant id may hold characters a key may not, and two tenants can never
share a prefix), the metadata to the ``fonts`` collection. A font is written
blob first, then document, so a crash between the two leaves an orphan blob,
never a document without bytes; delete goes the other way round.

The same bytes uploaded again by the same tenant answer the font already
stored; another file with the same family, weight and style is a Conflict
(a unique index makes that hold under concurrent uploads too).

The render path asks :meth:`FontLibrary.used_in` for every expansion: it
keeps each tenant's list in memory for ``cache_ttl`` seconds (dropped at
once on an upload or delete in this process; other replicas see it when
their entry expires), so a tenant without fonts costs a dictionary lookup.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import secrets
import time
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from litho.blobstore import BlobStore, validate_key
from litho.docstore import DocumentStore, DuplicateKey
from litho.errors import Conflict, FieldError, InvalidArgument, NotFound
from litho.logs import get_logger
from litho.lru import Lru
from services.template._fonts._reading import (
    CONTENT_TYPES,
    FAMILY_RULE,
    Face,
    check_family,
    declared_decoded_size,
    not_a_font,
    read_face,
    sniff,
)
from services.template._fonts._sandbox import Sandbox, SandboxLimit

log = get_logger(__name__)

_COLLECTION: Final = "fonts"
_FONT_ID: Final = re.compile(r"fnt_[0-9a-f]{24}")
#: Characters scanned for family names on the event loop at most (about a
#: millisecond); a larger document times more fonts is scanned in a thread.
_INLINE_SCAN_CHARS: Final = 1_000_000
#: Longest file name kept (for people only).
_MAX_FILE_NAME: Final = 255


@dataclass(frozen=True)
class FontLimits:
    max_bytes: int
    max_decoded_bytes: int
    max_fonts: int
    parse_memory: int
    parse_timeout: float


@dataclass(frozen=True)
class Font:
    id: str
    tenant_id: str
    family: str
    weight: int
    style: str
    format: str
    sha256: str
    size: int
    blob_key: str
    file_name: str
    full_name: str
    create_time: datetime

    @property
    def family_key(self) -> str:
        return self.family.lower()


def new_font_id() -> str:
    # Time-ordered like template ids, so listing by id lists by upload.
    return f"fnt_{int(time.time() * 1000):012x}{secrets.token_hex(6)}"


def blob_key(tenant_id: str, font_id: str, fmt: str) -> str:
    tenant = hashlib.sha256(tenant_id.encode()).hexdigest()[:32]
    return validate_key(f"fonts/{tenant}/{font_id}.{fmt}")


def _to_doc(f: Font) -> dict[str, Any]:
    return {
        "_id": f.id, "tenantId": f.tenant_id, "family": f.family, "familyKey": f.family_key,
        "weight": f.weight, "style": f.style, "format": f.format, "sha256": f.sha256,
        "size": f.size, "blobKey": f.blob_key, "fileName": f.file_name,
        "fullName": f.full_name, "createdAt": f.create_time.isoformat(),
    }


def _same_bytes(doc: dict[str, Any], family: str) -> Font:
    """The stored font for an upload of the same bytes, unless the upload
    asks for another family name (answering the old name would be wrong)."""
    font = _from_doc(doc)
    if family and family.lower() != font.family.lower():
        raise Conflict(f"these bytes are stored as font {font.id!r} with family "
                       f"{font.family!r}; delete it to upload them as {family[:100]!r}")
    return font


def _from_doc(d: dict[str, Any]) -> Font:
    return Font(
        id=d["_id"], tenant_id=d["tenantId"], family=d["family"], weight=int(d["weight"]),
        style=d["style"], format=d["format"], sha256=d["sha256"], size=int(d["size"]),
        blob_key=d["blobKey"], file_name=d.get("fileName", ""),
        full_name=d.get("fullName", ""), create_time=datetime.fromisoformat(d["createdAt"]))


def _order(f: Font) -> tuple[str, str, int, str, str]:
    return f.family_key, f.family, f.weight, f.style, f.id


def _invalid(field: str, message: str) -> InvalidArgument:
    return InvalidArgument(message, errors=[FieldError(field, message)])


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):g} MiB"


class FontLibrary:
    def __init__(self, store: DocumentStore, blobs: BlobStore, sandbox: Sandbox,
                 limits: FontLimits, *, cache_ttl: float, cache_size: int) -> None:
        self._docs = store.collection(_COLLECTION)
        self._blobs = blobs
        self._sandbox = sandbox
        self._limits = limits
        self._ttl = cache_ttl
        self._cache: Lru[str, tuple[float, tuple[Font, ...]]] = Lru(cache_size)
        # One upload at a time per tenant in this process, so the per-tenant
        # cap and the duplicate checks see each other's writes.
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary())

    async def prepare(self) -> None:
        await self._docs.ensure_index(["tenantId", "sha256"])
        await self._docs.ensure_index(["tenantId", "familyKey", "weight", "style"],
                                      unique=True)

    # ------------------------------------------------------------------ checks

    def check_request(self, data: bytes, *, family: str = "") -> None:
        """The checks that need no parsing: size and the family override."""
        limits = self._limits
        if len(data) > limits.max_bytes:
            raise _invalid("file", f"file is {len(data)} bytes; the limit is "
                           f"{limits.max_bytes} ({_mib(limits.max_bytes)}, "
                           "LITHO_TEMPLATE_MAX_FONT_BYTES)")
        if family:
            problem = check_family(family)
            if problem:
                raise _invalid("family", f"family {problem}: use {FAMILY_RULE}")

    async def inspect(self, data: bytes, *, family: str = "") -> tuple[str, Face]:
        """The format and face of an upload, or InvalidArgument naming the
        field (``file`` or ``family``) and the limit's setting."""
        self.check_request(data, family=family)
        limits = self._limits
        fmt = sniff(data)
        declared = declared_decoded_size(data, fmt)
        if declared > limits.max_decoded_bytes:
            raise _invalid("file", f"file declares {declared} bytes once decompressed; the "
                           f"limit is {limits.max_decoded_bytes} "
                           f"({_mib(limits.max_decoded_bytes)}, "
                           "LITHO_TEMPLATE_MAX_FONT_DECODED_BYTES)")
        try:
            face, why = await self._sandbox.run(read_face, data, fmt)
        except SandboxLimit as exc:
            raise _invalid("file", self._limit_message(exc)) from None
        if face is None:
            raise not_a_font(why)
        if family:
            return fmt, Face(family=family, full_name=face.full_name, weight=face.weight,
                             style=face.style)
        problem = check_family(face.family)
        if problem:
            raise _invalid("family", f"the family name in the font ({face.family[:120]!r}) "
                           f"{problem}; pass family to name it: {FAMILY_RULE}")
        return fmt, face

    def _limit_message(self, exc: SandboxLimit) -> str:
        limits = self._limits
        if exc.kind == "memory":
            what = (f"it needed more than {_mib(limits.parse_memory)} of memory "
                    "(LITHO_TEMPLATE_FONT_PARSE_MEMORY)")
        elif exc.kind == "time":
            what = (f"it took longer than {limits.parse_timeout:g} s "
                    "(LITHO_TEMPLATE_FONT_PARSE_TIMEOUT)")
        else:
            what = ("the parser's process crashed on it (limited by "
                    "LITHO_TEMPLATE_FONT_PARSE_MEMORY and LITHO_TEMPLATE_FONT_PARSE_TIMEOUT)")
        return f"the font could not be read within the limits: {what}"

    # --------------------------------------------------------------- use cases

    async def create(self, tenant_id: str, data: bytes, *, file_name: str = "",
                     family: str = "") -> Font:
        """Store an upload; the same bytes again answer the font stored
        (whatever ``family`` says this time)."""
        self.check_request(data, family=family)
        digest = hashlib.sha256(data).hexdigest()
        same = await self._docs.find_one({"tenantId": tenant_id, "sha256": digest})
        if same is not None:
            return _same_bytes(same, family)
        # Before the parse, which is the expensive part: a tenant at its cap
        # costs a count, not a worker.
        await self._refuse_past_cap(tenant_id)
        fmt, face = await self.inspect(data, family=family)
        lock = self._locks.setdefault(tenant_id, asyncio.Lock())
        async with lock:
            same = await self._docs.find_one({"tenantId": tenant_id, "sha256": digest})
            if same is not None:
                return _same_bytes(same, family)
            await self._refuse_clash(tenant_id, face)
            await self._refuse_past_cap(tenant_id)
            font_id = new_font_id()
            font = Font(
                id=font_id, tenant_id=tenant_id, family=face.family, weight=face.weight,
                style=face.style, format=fmt, sha256=digest, size=len(data),
                blob_key=blob_key(tenant_id, font_id, fmt),
                file_name=_clean_file_name(file_name), full_name=face.full_name,
                create_time=datetime.now(UTC))
            await self._blobs.put(font.blob_key, data, CONTENT_TYPES[fmt])
            try:
                await self._docs.insert(_to_doc(font))
            except DuplicateKey:
                # Another replica stored the same face meanwhile.
                await self._blobs.delete(font.blob_key)
                await self._refuse_clash(tenant_id, face)
                raise Conflict(f"a font with family {face.family!r}, weight {face.weight} "
                               f"and style {face.style} was uploaded at the same time; "
                               "retry") from None
            self._forget(tenant_id)
            log.info("font stored", tenant=tenant_id, font=font.id, family=font.family,
                     weight=font.weight, style=font.style, format=fmt, size=len(data))
            return font

    async def _refuse_past_cap(self, tenant_id: str) -> None:
        count = await self._docs.count({"tenantId": tenant_id})
        if count >= self._limits.max_fonts:
            raise _invalid("file", f"this tenant has {count} fonts; the limit is "
                           f"{self._limits.max_fonts} (LITHO_TEMPLATE_MAX_FONTS): "
                           "delete one first")

    async def _refuse_clash(self, tenant_id: str, face: Face) -> None:
        clash = await self._docs.find_one({
            "tenantId": tenant_id, "familyKey": face.family.lower(), "weight": face.weight,
            "style": face.style})
        if clash is not None:
            raise Conflict(
                f"font {clash['_id']!r} already has family {clash['family']!r}, weight "
                f"{face.weight} and style {face.style}; delete it first, or pass a "
                "different family")

    async def get(self, tenant_id: str, font_id: str) -> Font:
        doc = await self._docs.get(font_id)
        # Another tenant's font is indistinguishable from a missing one.
        if doc is None or doc.get("tenantId") != tenant_id:
            raise NotFound(f"font {font_id!r} not found")
        return _from_doc(doc)

    async def delete(self, tenant_id: str, font_id: str) -> None:
        font = await self.get(tenant_id, font_id)
        await self._docs.delete({"_id": font.id, "tenantId": tenant_id})
        self._forget(tenant_id)
        await self._blobs.delete(font.blob_key)

    async def page(self, tenant_id: str, *, page_size: int,
                   page_token: str) -> tuple[list[Font], str]:
        """A page of the tenant's fonts in id (upload) order."""
        flt: dict[str, Any] = {"tenantId": tenant_id}
        if page_token:
            flt["_id"] = {"$gt": _decode_token(page_token)}
        docs = await self._docs.find(flt, sort=[("_id", 1)], limit=page_size + 1)
        fonts = [_from_doc(d) for d in docs[:page_size]]
        token = _encode_token(fonts[-1].id) if len(docs) > page_size else ""
        return fonts, token

    async def used_in(self, tenant_id: str, html: str) -> list[Font]:
        """The tenant's fonts whose family ``html`` names (case-insensitively),
        in (family, weight, style, id) order."""
        fonts = await self._of(tenant_id)
        if not fonts:
            return []
        if len(html) * len(fonts) > _INLINE_SCAN_CHARS:
            return await asyncio.to_thread(_named_in, fonts, html)
        return _named_in(fonts, html)

    async def _of(self, tenant_id: str) -> tuple[Font, ...]:
        now = time.monotonic()
        cached = self._cache.get(tenant_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        docs = await self._docs.find({"tenantId": tenant_id}, sort=[("_id", 1)],
                                     limit=self._limits.max_fonts)
        fonts = tuple(sorted((_from_doc(d) for d in docs), key=_order))
        self._cache.put(tenant_id, (now + self._ttl, fonts))
        return fonts

    def _forget(self, tenant_id: str) -> None:
        # Lru has no removal: an entry that has already expired is the same.
        self._cache.put(tenant_id, (0.0, ()))


def _named_in(fonts: tuple[Font, ...], html: str) -> list[Font]:
    lowered = html.lower()
    return [f for f in fonts if f.family_key in lowered]


def _clean_file_name(name: str) -> str:
    # For people only, but it is echoed back in JSON and logs: no controls.
    return "".join(ch for ch in name if ch.isprintable())[:_MAX_FILE_NAME]


def _encode_token(font_id: str) -> str:
    return base64.urlsafe_b64encode(font_id.encode()).decode().rstrip("=")


def _decode_token(token: str) -> str:
    try:
        font_id = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except ValueError:
        font_id = ""
    if _FONT_ID.fullmatch(font_id):
        return font_id
    raise InvalidArgument("pageToken is not a token this API issued", errors=[
            FieldError("pageToken", "not issued by this API")])
