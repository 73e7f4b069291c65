"""``make chart``: lint and render the Helm chart, then validate every manifest.

For the chart's default values and for each file under
``deploy/helm/litho/ci/``: ``helm lint`` (strict: warnings fail), the values
against ``values.schema.json``, an offline render, and every rendered object
against the Kubernetes OpenAPI schema of :data:`KUBE_VERSION` in strict mode
(no unknown field). Helm runs in-process through ``helm-python-sdk`` (Helm's
Go SDK behind a C ABI, shipped in the wheel: no ``helm`` binary, no network),
the manifests are checked by ``kubernetes-validate`` (the schemas ship in it).

``python -m deploy.chart_check [VALUES.yaml ...]`` checks the given values
files instead of the ci ones; the exit status is 1 on any problem, with a
message naming the values file, the object and the field.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate  # type: ignore[import-untyped]
import yaml  # type: ignore[import-untyped]

CHART = Path(__file__).resolve().parent / "helm" / "litho"
#: The newest Kubernetes whose schemas kubernetes-validate ships.
KUBE_VERSION = "1.37.0"
RELEASE = "litho"
NAMESPACE = "litho"
#: Lint findings at or above this severity fail (1 info, 2 warning, 3 error).
LINT_FAILS_AT = 2


#: A DNS-1123 label (object names, ports' names) and a label value.
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$")


class ChartError(Exception):
    """The chart does not lint, render or validate for one values file."""


class _StrictLoader(yaml.SafeLoader):  # type: ignore[misc]
    """YAML that refuses a key given twice in one mapping: two documents run
    together by a missing ``---`` read as one object whose keys override the
    first's, and PyYAML would keep only the last silently."""


def _no_duplicates(loader: _StrictLoader, node: Any, deep: bool = False) -> Any:
    keys = [loader.construct_object(k, deep=deep) for k, _ in node.value]
    for key in keys:
        if keys.count(key) > 1:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} appears twice in one mapping", node.start_mark)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


@dataclass(frozen=True)
class Rendered:
    """The objects one values file renders to."""

    source: str
    objects: list[dict[str, Any]]
    #: NOTES.txt as ``helm install`` prints it.
    notes: str = ""

    def find(self, kind: str, name: str) -> dict[str, Any]:
        for obj in self.objects:
            if obj["kind"] == kind and obj["metadata"]["name"] == name:
                return obj
        raise KeyError(f"{kind}/{name} is not rendered from {self.source}")

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [obj for obj in self.objects if obj["kind"] == kind]


def ci_values(chart: Path = CHART) -> list[Path]:
    """The values files ``make chart`` renders besides the defaults."""
    return sorted((chart / "ci").glob("*.yaml"))


def load_values(path: Path) -> dict[str, Any]:
    """A values file as a mapping (an empty file is no values)."""
    try:
        loaded = yaml.load(path.read_text(encoding="utf-8"), Loader=_StrictLoader)
    except yaml.YAMLError as exc:
        raise ChartError(f"{path}: not YAML: {exc}") from exc
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ChartError(f"{path}: a values file must be a mapping, "
                         f"not {type(loaded).__name__}")
    return loaded


def lint(values: dict[str, Any] | None, source: str, chart: Path = CHART) -> None:
    report = helm.lint(chart, values, strict=True, kube_version=f"v{KUBE_VERSION}")
    problems = [f"{m['path']}: {m['error'].strip()}" for m in report["messages"]
                if m["severity"] >= LINT_FAILS_AT]
    problems += [e.strip() for e in report["errors"] if not any(e.strip() in p for p in problems)]
    if problems:
        raise ChartError(f"{source}: helm lint failed:\n" + "\n".join(problems))


def render(values: dict[str, Any] | None, source: str, chart: Path = CHART) -> Rendered:
    """Check ``values`` against the schema and render the chart offline."""
    with helm.Chart.load(chart) as loaded:
        try:
            loaded.validate_schema(values)
        except helm.HelmValuesError as exc:
            raise ChartError(f"{source}: values do not match values.schema.json:\n"
                             f"{str(exc).strip()}") from exc
        try:
            manifests = loaded.render(values, name=RELEASE, namespace=NAMESPACE,
                                      is_install=True)
        except helm.HelmError as exc:
            raise ChartError(f"{source}: the chart does not render: {exc}") from exc
    objects: list[dict[str, Any]] = []
    notes = ""
    for template, text in sorted(manifests.items()):
        if template.endswith("NOTES.txt"):
            notes = text
        else:
            objects += parse_manifests(text, f"{source}: {template}")
    return Rendered(source=source, objects=objects, notes=notes)


def parse_manifests(text: str, where: str) -> list[dict[str, Any]]:
    """The Kubernetes objects of one rendered template (YAML documents)."""
    try:
        documents = list(yaml.load_all(text, Loader=_StrictLoader))
    except yaml.YAMLError as exc:
        raise ChartError(f"{where} renders invalid YAML: {exc}") from exc
    objects = []
    for document in documents:
        if document is None:
            continue
        if not isinstance(document, dict) or "kind" not in document:
            raise ChartError(f"{where} renders something that is not a Kubernetes "
                             f"object: {document!r:.200}")
        objects.append(document)
    return objects


def validate(rendered: Rendered) -> None:
    """Every object against the strict Kubernetes schema of :data:`KUBE_VERSION`."""
    for obj in rendered.objects:
        where = f"{rendered.source}: {obj['kind']}/{obj.get('metadata', {}).get('name', '?')}"
        _check_names(obj, where)
        try:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path) or "(the object)"
            raise ChartError(f"{where}: not valid for Kubernetes {KUBE_VERSION}: "
                             f"{path}: {exc.message}") from exc
        except kubernetes_validate.SchemaNotFoundError as exc:
            raise ChartError(f"{where}: {exc.message}") from exc


def _check_names(obj: dict[str, Any], where: str) -> None:
    """What the JSON schemas leave to the API server: names and label values."""
    metadata = obj.get("metadata", {})
    if not _NAME.match(str(metadata.get("name", ""))):
        raise ChartError(f"{where}: the name is not a DNS-1123 label")
    labelled = [metadata.get("labels") or {}]
    template = obj.get("spec", {}).get("template", {}).get("metadata", {})
    labelled.append(template.get("labels") or {})
    for labels in labelled:
        for key, value in labels.items():
            if not isinstance(value, str) or not _LABEL_VALUE.match(value):
                raise ChartError(f"{where}: label {key}={value!r} is not a valid label value")


def check_values(values: dict[str, Any] | None, source: str,
                 chart: Path = CHART) -> Rendered:
    """Lint, render and validate the chart for one set of values."""
    rendered = render(values, source, chart)
    lint(values, source, chart)
    validate(rendered)
    return rendered


def check(files: Sequence[Path] | None = None, chart: Path = CHART) -> list[Rendered]:
    """The defaults, then each values file (the ci ones unless given)."""
    results = [check_values(None, "default values", chart)]
    for path in ci_values(chart) if files is None else files:
        results.append(check_values(load_values(path), _shown(path), chart))
    return results


def _shown(path: Path) -> str:
    """A values file's path as messages name it: relative to here when inside."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        results = check([Path(a) for a in args] if args else None)
    except ChartError as exc:
        print(f"make chart: {exc}", file=sys.stderr)
        return 1
    for result in results:
        kinds = sorted({obj["kind"] for obj in result.objects})
        print(f"chart ok: {result.source}: {len(result.objects)} objects "
              f"({', '.join(kinds)}) valid for Kubernetes {KUBE_VERSION}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
