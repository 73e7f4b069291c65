"""Uploaded fonts: reading untrusted font files in a sandbox (``_reading``,
``_sandbox``) and a tenant's font library (``_library``)."""

from services.template._fonts._library import Font, FontLibrary, FontLimits, blob_key
from services.template._fonts._reading import FAMILY_RULE, FORMATS, Face, check_family
from services.template._fonts._sandbox import Sandbox, SandboxLimit

__all__ = ["FAMILY_RULE", "FORMATS", "Face", "Font", "FontLibrary", "FontLimits", "Sandbox",
           "SandboxLimit", "blob_key", "check_family"]
