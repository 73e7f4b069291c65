"""The protos stay compatible with the API each release shipped.

`make lint` runs buf's breaking-change check (buf.yaml: ``breaking: use: FILE``)
against the newest image under ``proto/releases/``, written once per release by
`make release-protos VERSION=x.y.z`. These tests run that real check on the
repository, prove it fails on a copy of ``proto/`` with a deleted field and a
renamed RPC, and prove how make picks the baseline and writes a new one.
Renames made for buf's STANDARD lint also kept the bytes on the wire.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.message import Message

from litho.renderer.v1 import renderer_pb2 as pb

ROOT = Path(__file__).resolve().parents[2]
BUF = ROOT / "node_modules" / ".bin" / "buf"
RENDERER_PROTO = Path("proto/litho/renderer/v1/renderer.proto")
# The same flags as `make lint`: only Litho's files are checked, so dropping the
# last use of google/protobuf/timestamp.proto is not a deleted file.
BREAKING_FLAGS = ("--exclude-imports", "--error-format", "json")


def test_render_pdf_response_reads_what_render_pdf_answered_before_it_had_its_own_type() -> None:
    # RenderPdf answered RenderTemplateResponse until buf's RPC_RESPONSE_STANDARD_NAME
    # gave it RenderPdfResponse: same names, numbers and types, so old and new
    # peers still read each other.
    def fields(message: type[Message]) -> list[tuple[str, int, int]]:
        return [(f.name, f.number, f.type) for f in message.DESCRIPTOR.fields]

    assert fields(pb.RenderPdfResponse) == fields(pb.RenderTemplateResponse)
    old = pb.RenderTemplateResponse(render_id="a" * 64, format=pb.IMAGE_FORMAT_PDF, page_count=3,
                                    page_width_pt=595.28, size_bytes=1234)
    new = pb.RenderPdfResponse.FromString(old.SerializeToString())
    assert (new.render_id, new.format, new.page_count, new.page_width_pt, new.size_bytes) == (
        old.render_id, old.format, old.page_count, old.page_width_pt, old.size_bytes)


@pytest.fixture
def buf() -> Path:
    if not BUF.exists():
        pytest.skip(f"{BUF.relative_to(ROOT)} is missing: `make install` installs buf from npm")
    return BUF


def _make(*args: str) -> subprocess.CompletedProcess[str]:
    # A parent `make test` exports its flags (jobserver, -s, -n…); this make is our own.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    return subprocess.run(["make", "--no-print-directory", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def _baseline(releases: Path | None = None) -> str:
    """The image `make lint` checks against (the Makefile's PROTO_BASELINE)."""
    where = [f"PROTO_RELEASES={releases}"] if releases is not None else []
    done = _make("-s", "--eval", "print-proto-baseline: ; @echo '$(PROTO_BASELINE)'",
                 "print-proto-baseline", *where)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _breaking(buf: Path, source: Path, against: Path) -> tuple[int, list[dict[str, object]]]:
    done = subprocess.run([str(buf), "breaking", str(source), "--against", str(against),
                           *BREAKING_FLAGS], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=False)
    violations = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    assert done.returncode in (0, 100), done.stderr  # 100: violations; else buf itself failed
    return done.returncode, violations


def _copy_of_protos(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "proto", tmp_path / "proto")
    shutil.copy2(ROOT / "buf.yaml", tmp_path / "buf.yaml")
    return tmp_path


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{old!r} is not once in {path}"
    path.write_text(text.replace(old, new), encoding="utf-8")


def _add_render_page_rpc(copy: Path) -> None:
    rpc = "  rpc RenderHtml(RenderHtmlRequest) returns (RenderHtmlResponse);\n"
    _edit(copy / RENDERER_PROTO, rpc, rpc + rpc.replace("RenderHtml(", "RenderPage("))


def test_the_protos_do_not_break_the_newest_released_api(buf: Path) -> None:
    baseline = ROOT / _baseline()
    assert baseline.is_file(), f"no released API under proto/releases/ ({baseline})"

    code, violations = _breaking(buf, ROOT, baseline)

    assert (code, violations) == (0, [])


def test_the_first_release_holds_every_service_it_shipped() -> None:
    # An image built with a --path or from a half-edited tree would make every
    # later check pass on what it left out.
    image = descriptor_pb2.FileDescriptorSet.FromString(
        (ROOT / "proto/releases/v0.1.0.binpb").read_bytes())
    services = {f"{f.package}.{s.name}" for f in image.file for s in f.service}
    assert services == {"litho.template.v1.TemplateService", "litho.renderer.v1.RendererService",
                        "litho.binding.v1.BindingService", "litho.experiment.v1.ExperimentService",
                        "litho.webhook.v1.WebhookService"}
    assert "litho/events/v1/events.proto" in {f.name for f in image.file}
    assert all(f.HasField("source_code_info") for f in image.file if f.name.startswith("litho/"))


def test_deleting_a_field_and_renaming_an_rpc_break_the_released_api(
        buf: Path, tmp_path: Path) -> None:
    copy = _copy_of_protos(tmp_path)
    _edit(copy / RENDERER_PROTO, "  string selector = 6;\n", "")
    _edit(copy / RENDERER_PROTO, "rpc RenderHtml(", "rpc RenderPage(")

    code, violations = _breaking(buf, copy, ROOT / _baseline())

    assert code == 100
    found = {(str(v["type"]), str(v["message"])) for v in violations}
    assert found == {
        ("FIELD_NO_DELETE", 'Previously present field "6" with name "selector" on message '
                            '"RenderOptions" was deleted.'),
        ("RPC_NO_DELETE", 'Previously present RPC "RenderHtml" on service "RendererService" '
                          "was deleted."),
    }
    assert {Path(str(v["path"])) for v in violations} == {copy / RENDERER_PROTO}


def test_adding_a_field_and_an_rpc_keeps_the_released_api(buf: Path, tmp_path: Path) -> None:
    copy = _copy_of_protos(tmp_path)
    _edit(copy / RENDERER_PROTO, "  string selector = 6;\n",
          "  string selector = 6;\n  string background = 99;\n")
    _add_render_page_rpc(copy)

    assert _breaking(buf, copy, ROOT / _baseline()) == (0, [])


def test_lint_checks_against_the_newest_release_by_version_not_by_time(tmp_path: Path) -> None:
    for name in ("v0.9.0.binpb", "v0.10.0.binpb", "v1.0.0-rc1.binpb", "v2.0.0.json", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "v0.2.0.binpb").write_bytes(b"")  # written last: the newest mtime
    os.utime(tmp_path / "v0.10.0.binpb", (0, 0))

    assert _baseline(tmp_path) == f"{tmp_path}/v0.10.0.binpb"
    assert _baseline(tmp_path / "missing") == ""


def test_release_protos_writes_the_image_once_and_names_the_tag(buf: Path, tmp_path: Path) -> None:
    # -o: never run `npm ci` from a test, whatever node_modules' stamp says.
    def release(version: str, releases: Path = tmp_path) -> subprocess.CompletedProcess[str]:
        return _make("-o", "node_modules/.installed", "release-protos", f"VERSION={version}",
                     f"PROTO_RELEASES={releases}")

    done = release("0.2.0")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "tag that commit v0.2.0" in done.stdout
    built = tmp_path / "fresh.binpb"
    subprocess.run([str(buf), "build", "-o", str(built)], cwd=ROOT, check=True, timeout=120)
    assert (tmp_path / "v0.2.0.binpb").read_bytes() == built.read_bytes()

    again = release("0.2.0")
    assert again.returncode != 0 and "never rewritten" in again.stdout
    for bad in ("", "0.3", "v0.3.0", "0.3.0-rc1", "0.3.0; true"):
        refused = release(bad)
        assert refused.returncode != 0 and "VERSION=x.y.z" in refused.stdout, bad
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh.binpb", "v0.2.0.binpb"]


def test_release_protos_refuses_a_release_that_breaks_the_previous_one(
        buf: Path, tmp_path: Path) -> None:
    # A previous release with an RPC today's protos lack.
    copy = _copy_of_protos(tmp_path / "src")
    _add_render_page_rpc(copy)
    releases = tmp_path / "releases"
    releases.mkdir()
    subprocess.run([str(buf), "build", str(copy), "-o", str(releases / "v0.9.0.binpb")],
                   cwd=ROOT, check=True, timeout=120)

    done = _make("-o", "node_modules/.installed", "release-protos", "VERSION=0.10.0",
                 f"PROTO_RELEASES={releases}")

    assert done.returncode != 0
    assert re.search(r'RPC "RenderPage" on service "RendererService" was deleted', done.stdout)
    assert not (releases / "v0.10.0.binpb").exists()
