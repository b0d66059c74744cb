"""RBAC in one vocabulary: the access (verb, API group, resource) an API request needs,
and the accesses a Role's or ClusterRole's rules grant."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp.web
import attrs
import kmock
from kube_emulator import VERBS, ApiServer
from operator_harness import AGENT

PEERINGS = {
    "kopf.dev/v1/clusterkopfpeerings": ("ClusterKopfPeering", False),
    "kopf.dev/v1/kopfpeerings": ("KopfPeering", True),
}
"""kopf's peering resources, as charts/r1-operator/crds/kopf-peerings.yaml defines them."""


@dataclass(frozen=True, order=True)
class Access:
    """What RBAC checks: a verb on a resource (`plural` or `plural/subresource`) of a group
    ("" is the core group)."""

    verb: str
    group: str
    resource: str

    def __str__(self) -> str:
        return f"{self.verb} {self.group or 'core'}/{self.resource}"


@dataclass(frozen=True)
class Scoped:
    """An access and the namespace it is made in (None: cluster-scoped or all namespaces)."""

    access: Access
    namespace: str | None


def access_of(method: str, path: str, query: Mapping[str, str]) -> Scoped | None:
    """The access one API request needs, or None for discovery (/api, /apis/<group>/<v>:
    non-resource URLs that Kubernetes lets every authenticated user read).

    GET of an object is `get`, of a collection `list`, with ?watch `watch`; POST `create`,
    PUT `update`, PATCH `patch` (server-side apply included), DELETE `delete` (of a
    collection `deletecollection`)."""
    parts = path.strip("/").split("/")
    if parts[0] not in ("api", "apis"):
        raise ValueError(f"not a Kubernetes API path: {path}")
    group, rest = ("", parts[2:]) if parts[0] == "api" else ("/".join(parts[1:2]), parts[3:])
    if not rest:
        return None
    namespace = None
    if rest[0] == "namespaces" and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    resource = "/".join(rest[:1] + rest[2:3])
    named = len(rest) > 1
    return Scoped(Access(_verb(method, named, query), group, resource), namespace)


def _verb(method: str, named: bool, query: Mapping[str, str]) -> str:
    if method == "GET":
        if query.get("watch", "").lower() in ("true", "1"):
            return "watch"
        return "get" if named else "list"
    if method == "DELETE":
        return "delete" if named else "deletecollection"
    return {"POST": "create", "PUT": "update", "PATCH": "patch"}[method]


def granted(rules: Iterable[Mapping[str, Any]]) -> set[Access]:
    """Every access `rules` grant. Wildcards, resourceNames and nonResourceURLs are refused:
    the operator's rules name each verb and resource."""
    found = set()
    for rule in rules:
        assert set(rule) == {"apiGroups", "resources", "verbs"}, rule
        for field in rule.values():
            assert "*" not in field, f"wildcard in {rule}"
        for verb in rule["verbs"]:
            for group in rule["apiGroups"]:
                found |= {Access(verb, group, resource) for resource in rule["resources"]}
    return found


@attrs.define(kw_only=True)
class RecordingApiServer(ApiServer):
    """The emulator, also serving kopf's peering resources, recording every request that
    is not the tests' own as (method, path, query)."""

    seen: list[tuple[str, str, dict[str, str]]] = attrs.field(factory=list, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        for name, (kind, namespaced) in PEERINGS.items():
            # NOTE: kmock declares kopf.dev's resources already, but with no kind or scope.
            self.resources[name] = kmock.ResourceInfo(
                kind=kind, singular=kind.lower(), namespaced=namespaced, verbs=VERBS
            )

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        query = dict(raw_request.query)
        if raw_request.headers.get("User-Agent") != AGENT:
            self.seen.append((raw_request.method, raw_request.path, query))
        if raw_request.path.rstrip("/") == "/api/v1/namespaces" and "watch" in query:
            # Gap: ApiServer answers a namespace watch with the list (kopf fails on it).
            # No namespace comes or goes here: a silent stream until its timeout.
            response = aiohttp.web.StreamResponse()
            await response.prepare(raw_request)
            await asyncio.sleep(float(query.get("timeoutSeconds") or 60))
            return response
        return await super().__call__(raw_request)

    def accesses(self) -> list[Scoped]:
        return [
            scoped
            for method, path, query in list(self.seen)
            if (scoped := access_of(method, path, query))
        ]
