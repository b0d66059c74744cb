"""Render charts/r1-operator offline with Helm's own engine (helm-python-sdk), for the
chart tests and for `make scan`.

    python tests/chart/chart_support.py OUT_DIR   # one YAML file per values variant
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "r1-operator"
RELEASE, NAMESPACE = "r1-operator", "r1-system"

Obj = dict[str, Any]

VARIANTS: dict[str, Obj] = {
    "default": {},
    "namespaced": {"watchNamespaces": ["ml", "research"]},
    "peering": {"replicaCount": 2, "peering": {"enabled": True}},
    "namespaced-peering": {
        "replicaCount": 2,
        "peering": {"enabled": True},
        "watchNamespaces": ["ml"],
    },
    "service-monitor": {"metrics": {"serviceMonitor": {"enabled": True}}},
}
"""Values the tests and the scan render: the defaults and each optional feature on."""


def render(values: Obj | None = None) -> list[Obj]:
    """The objects `helm template` would print for `values` (NOTES.txt excluded), in
    template order; CRDs under crds/ are not templates and are not included."""
    with helm.Chart.load(CHART) as chart:
        rendered = chart.render(values or {}, name=RELEASE, namespace=NAMESPACE)
    return [
        obj
        for path, text in sorted(rendered.items())
        if not path.endswith("NOTES.txt")
        for obj in yaml.safe_load_all(text)
        if obj
    ]


def by_kind(objects: list[Obj], kind: str) -> list[Obj]:
    return [obj for obj in objects if obj["kind"] == kind]


def one(objects: list[Obj], kind: str) -> Obj:
    """The single object of `kind` (fails when there are none or several)."""
    [found] = by_kind(objects, kind)
    return found


def operator_container(objects: list[Obj]) -> Obj:
    [operator] = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    return operator


def notes(values: Obj | None = None) -> str:
    with helm.Chart.load(CHART) as chart:
        rendered = chart.render(values or {}, name=RELEASE, namespace=NAMESPACE)
    return next(text for path, text in rendered.items() if path.endswith("NOTES.txt"))


def chart_crds() -> list[Obj]:
    """The CRDs Helm installs from the chart's crds/ folder."""
    with helm.Chart.load(CHART) as chart:
        return [obj for crd in chart.crds for obj in yaml.safe_load_all(crd["data"]) if obj]


def write_variants(out: Path) -> list[Path]:
    """One multi-document YAML per variant in `out` (its CRDs in crds.yaml)."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, values in VARIANTS.items():
        path = out / f"chart-{name}.yaml"
        path.write_text(yaml.safe_dump_all(render(values), sort_keys=False, explicit_start=True))
        written.append(path)
    crds = out / "chart-crds.yaml"
    crds.write_text(yaml.safe_dump_all(chart_crds(), sort_keys=False, explicit_start=True))
    return [*written, crds]


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: chart_support.py OUT_DIR")
    for path in write_variants(Path(sys.argv[1])):
        print(path)
