"""charts/r1-operator rendered by Helm's own engine (helm-python-sdk, no helm binary):
lint, values schema, every object valid against the Kubernetes schemas, and what each
values variant must produce."""

from __future__ import annotations

import shlex
from typing import Any

import helm_python as helm
import jsonschema
import pytest
import yaml
from chart_support import (
    CHART,
    NAMESPACE,
    RELEASE,
    VARIANTS,
    by_kind,
    chart_crds,
    notes,
    one,
    operator_container,
    render,
)
from factories import ROOT
from r1_operator import cli
from r1_operator.crd import crd_yaml
from render_support import validate_strictly

Obj = dict[str, Any]

SERVICE_MONITOR_SCHEMA: Obj = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "metadata": {"type": "object", "required": ["name", "namespace"]},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector", "endpoints"],
            "properties": {
                "selector": {
                    "type": "object",
                    "properties": {"matchLabels": {"type": "object"}},
                    "additionalProperties": False,
                },
                "namespaceSelector": {
                    "type": "object",
                    "properties": {"matchNames": {"type": "array", "items": {"type": "string"}}},
                    "additionalProperties": False,
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["port"],
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "interval": {"type": "string", "pattern": "^([0-9]+(ms|s|m|h))+$"},
                            "scrapeTimeout": {
                                "type": "string",
                                "pattern": "^([0-9]+(ms|s|m|h))+$",
                            },
                        },
                    },
                },
            },
        },
    },
}
"""The part of the Prometheus Operator's ServiceMonitor CRD the chart uses (fields as in
monitoring.coreos.com/v1): kubernetes-validate has no schema for CRD kinds."""

VARIANT_IDS = {
    "default": "with default values",
    "namespaced": "watching two namespaces",
    "peering": "with 2 replicas and cluster-wide peering",
    "namespaced-peering": "with 2 replicas peering in one watched namespace",
    "service-monitor": "with a ServiceMonitor",
}


def variants() -> list[Any]:
    return [pytest.param(values, id=VARIANT_IDS[name]) for name, values in VARIANTS.items()]


def validate_object(obj: Obj, crds: list[Obj]) -> None:
    """Strict Kubernetes schema validation; CRD kinds against their own schema."""
    if obj["kind"] == "ServiceMonitor":
        jsonschema.validate(obj, SERVICE_MONITOR_SCHEMA)
        return
    crd = next((c for c in crds if c["spec"]["names"]["kind"] == obj["kind"]), None)
    if crd:
        [version] = crd["spec"]["versions"]
        assert obj["apiVersion"] == f"{crd['spec']['group']}/{version['name']}"
        assert ("namespace" in obj["metadata"]) == (crd["spec"]["scope"] == "Namespaced")
        jsonschema.validate(obj, version["schema"]["openAPIV3Schema"])
        return
    validate_strictly(obj)


# --- the CRDs ---------------------------------------------------------------------------


def test_chart_crd_is_generated_from_api_py() -> None:
    chart_copy = (CHART / "crds" / "deepseekdeployments.yaml").read_text()
    assert chart_copy == crd_yaml(), (
        "charts/r1-operator/crds/deepseekdeployments.yaml drifted from the API: run `make crds`"
    )
    assert chart_copy == (ROOT / "crds" / "deepseekdeployments.yaml").read_text()


def test_chart_crds_are_valid_and_include_kopf_peering() -> None:
    crds = chart_crds()
    for crd in crds:
        validate_strictly(crd)
    assert {crd["metadata"]["name"] for crd in crds} == {
        "deepseekdeployments.r1-operator.dev",
        "clusterkopfpeerings.kopf.dev",
        "kopfpeerings.kopf.dev",
    }


# --- lint, schema, every object valid ------------------------------------------------------


@pytest.mark.parametrize("values", variants())
def test_chart_lints_clean_in_strict_mode(values: Obj) -> None:
    report = helm.lint(CHART, values, strict=True, namespace=NAMESPACE)
    assert (report["errors"], report["messages"]) == ([], [])


@pytest.mark.parametrize("values", variants())
def test_every_rendered_object_is_valid(values: Obj) -> None:
    crds = chart_crds()
    objects = render(values)
    assert objects
    for obj in objects:
        validate_object(obj, crds)


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        pytest.param({"replicas": 2}, "'replicas' not allowed", id="an unknown key"),
        pytest.param({"replicaCount": "two"}, "/replicaCount", id="a string replica count"),
        pytest.param(
            {"securityContext": {"readOnlyRootFilesystem": False}},
            "/securityContext/readOnlyRootFilesystem",
            id="a writable root filesystem",
        ),
        pytest.param({"podSecurityContext": {"runAsNonRoot": False}}, "runAsNonRoot", id="root"),
        pytest.param({"image": {"digest": "latest"}}, "/image/digest", id="a digest that is not"),
        pytest.param({"watchNamespaces": ["Bad_NS"]}, "/watchNamespaces/0", id="a bad namespace"),
        pytest.param(
            {"metrics": {"serviceMonitor": {"interval": "often"}}},
            "/metrics/serviceMonitor/interval",
            id="an interval that is not a duration",
        ),
    ],
)
def test_values_schema_refuses_a_bad_value_naming_it(values: Obj, complaint: str) -> None:
    with helm.Chart.load(CHART) as chart:
        with pytest.raises(helm.HelmValuesError, match=complaint):
            chart.validate_schema(values)
        with pytest.raises(helm.HelmValuesError, match=complaint):
            chart.render(values, name=RELEASE, namespace=NAMESPACE)
    report = helm.lint(CHART, values, strict=True, namespace=NAMESPACE)
    assert report["errors"] or report["messages"], "lint must report a value the schema refuses"


def test_several_replicas_without_peering_are_refused() -> None:
    with pytest.raises(helm.HelmRenderError, match=r"replicaCount > 1 needs peering.enabled=true"):
        render({"replicaCount": 2})


# --- what the operator pod gets -----------------------------------------------------------


@pytest.mark.parametrize("values", variants())
def test_operator_args_are_ones_r1_operator_run_accepts(values: Obj) -> None:
    """The chart's side of the contract with `r1-operator run` (operator/r1_operator/cli.py)."""
    objects = render(values)
    operator = operator_container(objects)
    args = cli._parser().parse_args(operator["args"])
    assert args.command is cli._run
    assert args.namespace == values.get("watchNamespaces", [])
    peering = values.get("peering", {}).get("enabled", False)
    assert args.peering == ("r1-operator" if peering else None), shlex.join(operator["args"])
    assert args.liveness == "http://0.0.0.0:8081/healthz"
    # NOTE: no --priority: one value in the pod template would be every replica's, and kopf
    # pauses all peers of one priority. Each replica draws its own (cli.peering_priority).
    assert args.priority is None


def test_operator_pod_is_restricted_and_probed_on_kopfs_liveness_endpoint() -> None:
    objects = render()
    deployment = one(objects, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    operator = operator_container(objects)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] >= 10000
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert operator["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
    }
    ports = {port["name"]: port["containerPort"] for port in operator["ports"]}
    args = cli._parser().parse_args(operator["args"])
    assert args.liveness.endswith(f":{ports['health']}/healthz")
    for probe in ("livenessProbe", "readinessProbe"):
        assert operator[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    env = {var["name"]: var.get("value") for var in operator["env"]}
    assert env["R1_OPERATOR_METRICS_PORT"] == str(ports["metrics"])
    assert operator["resources"]["limits"] and operator["resources"]["requests"]
    mounts = {mount["mountPath"] for mount in operator["volumeMounts"]}
    assert mounts == {"/tmp"}, "a read-only root needs a writable /tmp, and nothing else"


def test_only_the_operator_pod_mounts_a_service_account_token() -> None:
    objects = render()
    account = one(objects, "ServiceAccount")
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert account["automountServiceAccountToken"] is False
    assert pod["automountServiceAccountToken"] is True
    assert pod["serviceAccountName"] == account["metadata"]["name"]


@pytest.mark.parametrize("values", variants())
def test_namespaced_objects_live_in_the_release_namespace(values: Obj) -> None:
    watched = set(values.get("watchNamespaces", []))
    for obj in render(values):
        if obj["kind"] in ("ClusterRole", "ClusterRoleBinding", "ClusterKopfPeering"):
            assert "namespace" not in obj["metadata"]
        elif obj["kind"] in ("Role", "RoleBinding", "KopfPeering"):
            assert obj["metadata"]["namespace"] in watched
        else:
            assert obj["metadata"]["namespace"] == NAMESPACE, obj["kind"]


def test_metrics_service_and_network_policy_select_the_operator_pod() -> None:
    objects = render({"metrics": {"serviceMonitor": {"enabled": True}}})
    pod_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    service, policy = one(objects, "Service"), one(objects, "NetworkPolicy")
    monitor = one(objects, "ServiceMonitor")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    service_labels = service["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service_labels.items()
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["metrics"]
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
    allowed = {port["port"] for rule in policy["spec"]["ingress"] for port in rule["ports"]}
    assert allowed == {"metrics", "health"}


def test_service_monitor_is_off_by_default() -> None:
    assert by_kind(render(), "ServiceMonitor") == []


@pytest.mark.parametrize(
    ("values", "peerings"),
    [
        pytest.param(VARIANTS["peering"], {("ClusterKopfPeering", None)}, id="cluster-wide"),
        pytest.param(
            VARIANTS["namespaced-peering"], {("KopfPeering", "ml")}, id="in the watched namespace"
        ),
        pytest.param(VARIANTS["default"], set(), id="none without peering"),
    ],
)
def test_peering_objects_match_the_operators_peering_name(values: Obj, peerings: set[Any]) -> None:
    objects = render(values)
    found = {
        (obj["kind"], obj["metadata"].get("namespace"))
        for obj in objects
        if obj["kind"].endswith("KopfPeering")
    }
    assert found == peerings
    names = {obj["metadata"]["name"] for obj in objects if obj["kind"].endswith("KopfPeering")}
    peering = cli._parser().parse_args(operator_container(objects)["args"]).peering
    assert names == ({peering} if peering else set())


def test_notes_say_where_the_operator_runs_and_how_to_check_it() -> None:
    text = notes(VARIANTS["namespaced-peering"])
    assert f"installed in namespace {NAMESPACE}, watching: ml." in text
    assert 'peer through the KopfPeering "r1-operator"' in text
    assert f"rollout status deployment/{RELEASE}" in text


def test_values_file_is_what_the_chart_loads() -> None:
    with helm.Chart.load(CHART) as chart:
        assert chart.values == yaml.safe_load((CHART / "values.yaml").read_text())
        chart.validate_schema(chart.values)


def test_an_existing_service_account_needs_its_name() -> None:
    with pytest.raises(helm.HelmRenderError, match=r"serviceAccount\.name is required"):
        render({"serviceAccount": {"create": False}})
    objects = render(
        {"serviceAccount": {"create": False, "name": "ops"}, "rbac": {"create": False}}
    )
    assert by_kind(objects, "ServiceAccount") == []
    assert {o["kind"] for o in objects} & {"ClusterRole", "ClusterRoleBinding", "Role"} == set()
    assert one(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "ops"
