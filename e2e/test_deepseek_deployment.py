"""One DeepSeekDeployment through its life on a real cluster: the CRD is served, the example
becomes Ready, the OpenAI API answers through a port-forward, it scales, and deleting it
removes its children. The tests run in file order and share the module's deployment."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from e2e_support import CRD, Settings, children, get, kubectl, port_forward, wait_for

KIND = "deepseekdeployments.r1-operator.dev"
Obj = dict[str, Any]


def live(manifest: Obj) -> Obj:
    meta = manifest["metadata"]
    return get(KIND, meta["namespace"], meta["name"]) or {}


def condition(obj: Obj, kind: str = "Ready") -> Obj:
    found = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in found if c.get("type") == kind), {})


def is_ready(obj: Obj) -> bool:
    status = obj.get("status") or {}
    return (
        condition(obj).get("status") == "True"
        and status.get("observedGeneration") == obj["metadata"]["generation"]
    )


def describe(manifest: Obj) -> str:
    """What to show when a wait fails: the status and the namespace's recent events."""
    namespace = manifest["metadata"]["namespace"]
    events = kubectl("-n", namespace, "get", "events", "--sort-by=.lastTimestamp", check=False)
    status = json.dumps(live(manifest).get("status"), indent=1)
    return f"status: {status}\nevents:\n{events[-3000:]}"


def test_the_crd_is_established(operator: None) -> None:
    out = kubectl(
        "get",
        "-f",
        str(CRD),
        "-o",
        "jsonpath={.status.conditions[?(@.type=='Established')].status}",
    )
    assert out == "True"


def test_the_example_becomes_ready(deployed: Obj, settings: Settings) -> None:
    obj = wait_for(
        lambda: (found := live(deployed)) and is_ready(found) and found,
        timeout=settings.ready_timeout,
        what="Ready=True at the current generation",
        show=lambda: describe(deployed),
    )
    status = obj["status"]
    assert status["phase"] == "Ready"
    assert status["readyReplicas"] >= 1
    assert status["endpoint"].endswith(
        f".{deployed['metadata']['namespace']}.svc:{port(deployed)}/v1"
    )
    assert children(deployed["metadata"]["namespace"], deployed["metadata"]["name"])


def test_the_openai_api_answers_through_a_port_forward(deployed: Obj, api_key: str | None) -> None:
    namespace, name = deployed["metadata"]["namespace"], deployed["metadata"]["name"]
    model = deployed["spec"]["model"]["name"]
    with port_forward(namespace, name, port(deployed)) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=api_key or "unused", max_retries=2)
        assert model in [m.id for m in client.models.list()]
        reply = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "What is 2 + 2?"}],
            max_tokens=32,
            temperature=0,
        )
    choice = reply.choices[0]
    assert choice.finish_reason in ("stop", "length")
    assert reply.usage is not None and reply.usage.completion_tokens > 0
    if api_key:
        with port_forward(namespace, name, port(deployed)) as url:
            anonymous = openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0)
            with pytest.raises(openai.AuthenticationError):
                anonymous.models.list()


def test_scaling_brings_up_another_ready_replica(deployed: Obj, settings: Settings) -> None:
    if settings.scale_to < 2:
        pytest.skip("R1_E2E_SCALE_TO < 2: scaling is not exercised")
    namespace, name = deployed["metadata"]["namespace"], deployed["metadata"]["name"]
    if deployed["spec"].get("autoscaling"):
        # The HPA owns spec.replicas: raise its floor instead of fighting it.
        patch = {"spec": {"autoscaling": {"minReplicas": settings.scale_to}}}
        kubectl("-n", namespace, "patch", KIND, name, "--type=merge", "-p", json.dumps(patch))
    else:
        # Through the scale subresource, as `kubectl scale` and an HPA do.
        kubectl("-n", namespace, "scale", KIND, name, f"--replicas={settings.scale_to}")
    obj = wait_for(
        lambda: (
            (found := live(deployed))
            and is_ready(found)
            and found["status"].get("readyReplicas", 0) >= settings.scale_to
            and found
        ),
        timeout=settings.ready_timeout,
        what=f"{settings.scale_to} ready replicas",
        show=lambda: describe(deployed),
    )
    assert obj["status"]["replicas"] >= settings.scale_to


def test_deleting_it_removes_its_children(deployed: Obj) -> None:
    namespace, name = deployed["metadata"]["namespace"], deployed["metadata"]["name"]
    kubectl("-n", namespace, "delete", KIND, name, "--wait=true", "--timeout=300s")
    wait_for(
        lambda: not children(namespace, name),
        timeout=300,
        what="the children garbage-collected",
        show=lambda: children(namespace, name),
    )

    def pods() -> list[str]:
        selector = f"app.kubernetes.io/instance={name}"
        return kubectl("-n", namespace, "get", "pods", "-l", selector, "-o", "name").split()

    wait_for(lambda: not pods(), timeout=300, what="the pods gone", show=pods)


def port(manifest: Obj) -> int:
    return int((manifest["spec"].get("service") or {}).get("port", 8000))
