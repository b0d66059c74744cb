"""An API server stand-in for operator tests: kmock's KubernetesEmulator (kopf's author's
in-memory API over real HTTP) plus what kopf and the operator rely on and kmock 0.8 lacks.

Each override names the gap it fills; every gap was found by running kmock here
(tests/operator/test_emulator.py pins them). Not emulated: schema validation and defaulting,
admission, SSA conflicts between managers, PUT, deletion propagation policies (dependents
always go in the background), set-based label selectors, field selectors.
Objects are stored as plain dicts replaced whole on each write, so readers in other threads
(tests) never see one half-written.
"""

from __future__ import annotations

import asyncio
import collections
import copy
import datetime
import functools
import itertools
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp.web
import attrs
import jsonpatch
import kmock
import yaml

Obj = dict[str, Any]
Key = tuple[kmock.resource, str | None, str]

CORE = {
    "r1-operator.dev/v1alpha1/deepseekdeployments": ("DeepSeekDeployment", "status scale", "dsd"),
    "v1/configmaps": ("ConfigMap", "", "cm"),
    "v1/persistentvolumeclaims": ("PersistentVolumeClaim", "status", "pvc"),
    "v1/services": ("Service", "status", "svc"),
    "v1/events": ("Event", "", "ev"),
    "v1/pods": ("Pod", "status", "po"),
    "batch/v1/jobs": ("Job", "status", "job"),
    "apps/v1/deployments": ("Deployment", "status scale", "deploy"),
    "networking.k8s.io/v1/networkpolicies": ("NetworkPolicy", "", "netpol"),
    "policy/v1/poddisruptionbudgets": ("PodDisruptionBudget", "status", "pdb"),
    "autoscaling/v2/horizontalpodautoscalers": ("HorizontalPodAutoscaler", "status", "hpa"),
}
LEADER_WORKER_SETS = "leaderworkerset.x-k8s.io/v1/leaderworkersets"
CLUSTER_SCOPED = {
    # kopf waits for both in discovery before it watches anything, even cluster-wide.
    "v1/namespaces": ("Namespace", "status", "ns"),
    "apiextensions.k8s.io/v1/customresourcedefinitions": ("CustomResourceDefinition", "", "crd"),
}
VERBS = {"get", "list", "watch", "create", "update", "patch", "delete"}
APPLY, JSON_PATCH = "application/apply-patch+yaml", "application/json-patch+json"
WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
REQUEST_LOG = 10
"""kmock matches each request against its whole log, per reaction (O(n) per request), and
every reaction keeps what it served: keep only a tail (the match runs before any await)."""
EVENT_HISTORY = 5000
"""Watch events kept for `?watch=true&resourceVersion=N`; older ones answer 410 Gone."""
BOOKMARK_SECONDS = 20.0
"""kopf drops a watch silent for 70 s (inactivity_timeout); real servers send bookmarks."""


@dataclass(frozen=True)
class Write:
    """One write request as it arrived (fault-injected ones included)."""

    seq: int
    method: str
    path: str
    agent: str
    verb: str = ""
    """As `verb()` names it: create, apply, patch, update or delete."""


Request = tuple[str, str, str]
"""(User-Agent, verb, resource) of one request, as counted in ApiServer.requests."""


class InjectedFault(kmock.KubernetesError):
    """An error answered because a test asked for it (see ApiServer.fail)."""


@dataclass
class Fault:
    method: str
    plural: str
    status: int
    times: int


@attrs.define(kw_only=True)
class ApiServer(kmock.KubernetesEmulator):
    """Serves the resources the operator needs; `leaderworkersets` toggles that CRD's API."""

    leaderworkersets: bool = False
    event_history: int = EVENT_HISTORY
    _rv: int = attrs.field(default=0, init=False)
    _changed: asyncio.Condition = attrs.field(init=False)
    _events: collections.deque[tuple[int, kmock.resource, str | None, Obj]] = attrs.field(
        init=False
    )
    _forgotten_rv: int = attrs.field(default=0, init=False)
    _applied: dict[Key, dict[str, set[tuple[str, ...]]]] = attrs.field(factory=dict, init=False)
    _collections: dict[tuple[kmock.resource, str | None], dict[Key, None]] = attrs.field(
        factory=dict, init=False
    )
    """Keys by (resource, namespace), in creation order: lists read one collection, not all."""
    _uids: set[str] = attrs.field(factory=set, init=False)
    _faults: list[Fault] = attrs.field(factory=list, init=False)
    _writes: collections.deque[Write] = attrs.field(
        factory=lambda: collections.deque(maxlen=20000), init=False
    )
    _write_seq: itertools.count[int] = attrs.field(factory=itertools.count, init=False)
    _guard: threading.Lock = attrs.field(factory=threading.Lock, init=False)
    errors_by_status: collections.Counter[int] = attrs.field(
        factory=collections.Counter, init=False
    )
    """How many error answers of each HTTP status were given, injected faults excepted."""
    watch_selectors: dict[str, set[str]] = attrs.field(factory=dict, init=False)
    """labelSelector of the watch requests, by resource plural ("" for none)."""
    requests: collections.Counter[Request] = attrs.field(factory=collections.Counter, init=False)
    """Every request by (User-Agent, verb, resource plural[/subresource]); see `verb`."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._changed = asyncio.Condition(self._lock)
        self._events = collections.deque(maxlen=self.event_history)
        for name, (kind, subresources, short) in {**CORE, **CLUSTER_SCOPED}.items():
            self.resources[name] = kmock.ResourceInfo(
                kind=kind,
                singular=kind.lower(),
                namespaced=name not in CLUSTER_SCOPED,
                verbs=VERBS,
                shortnames={short},
                subresources=set(subresources.split()),
            )
        self.serve_leaderworkersets(self.leaderworkersets)

    # --- test controls (thread-safe: called from the test thread) ---

    def serve_leaderworkersets(self, served: bool) -> None:
        """Install or remove the LeaderWorkerSet API, as `kubectl apply` of its CRD would."""
        if served:
            self.resources[LEADER_WORKER_SETS] = kmock.ResourceInfo(
                kind="LeaderWorkerSet",
                singular="leaderworkerset",
                namespaced=True,
                verbs=VERBS,
                subresources={"status", "scale"},
            )
        elif LEADER_WORKER_SETS in self.resources:
            del self.resources[LEADER_WORKER_SETS]

    def fail(self, method: str, plural: str, status: int, times: int = 1) -> None:
        """The next `times` requests with this HTTP method on resource `plural` answer
        `status` and change nothing. (kmock's reactions would answer too, but only after
        its emulator has already applied the write, and its `[:n]` slices count the log.)"""
        with self._guard:
            self._faults.append(Fault(method.upper(), plural, status, times))

    def pending_faults(self) -> int:
        with self._guard:
            return sum(fault.times for fault in self._faults)

    def write_mark(self) -> int:
        """A point in the write log; pass it to `writes_since`."""
        with self._guard:
            return self._writes[-1].seq + 1 if self._writes else 0

    def request_counts(self) -> collections.Counter[Request]:
        """A copy of `requests`, taken atomically."""
        with self._guard:
            return collections.Counter(self.requests)

    def writes_since(self, mark: int) -> list[Write]:
        """POST/PUT/PATCH/DELETE requests since `mark`, oldest first."""
        with self._guard:
            return [write for write in self._writes if write.seq >= mark]

    # --- request plumbing ---

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        # Gap: kmock's path parser raises on the namespace collection URL. Listing the
        # namespaces objects live in is enough: kopf watches them only for namespace globs.
        if raw_request.method == "GET" and raw_request.path.rstrip("/") == "/api/v1/namespaces":
            names = sorted({ns for _, ns, _ in self.objects if ns} | {"default"})
            items = [{"metadata": {"name": name}} for name in names]
            return aiohttp.web.json_response({"kind": "NamespaceList", "items": items})
        return await super().__call__(raw_request)

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        # Gap: the request log and the error list grow without bound and slow every request.
        del self._requests[:-REQUEST_LOG]
        for reaction in self._payloads:
            del reaction._requests[:-REQUEST_LOG]
        for errors in self._errors:
            del errors[:-REQUEST_LOG]
        method = str(request.method.value).upper()
        with self._guard:
            agent, kind, _ = key = _request_key(request, method)
            self.requests[key] += 1
            if method in WRITE_METHODS:
                write = Write(next(self._write_seq), method, request.url.path, agent, kind)
                self._writes.append(write)
            fault = self._take_fault(method, request.resource)
        if fault:
            raise InjectedFault(status=fault, reason=REASONS.get(fault), message="injected")
        # Skip KubernetesEmulator._handle: it writes before reactions run, with none of the
        # API's metadata; the _serve_* fallbacks below do the writes instead.
        return await kmock.RawHandler._handle(self, request)

    async def _render_error(self, exc: Exception) -> aiohttp.web.StreamResponse:
        if not isinstance(exc, InjectedFault):
            status = exc.status if isinstance(exc, kmock.KubernetesError) else 500
            with self._guard:
                self.errors_by_status[status] += 1
        return await super()._render_error(exc)

    def _take_fault(self, method: str, resource: kmock.resource | None) -> int | None:
        for fault in self._faults:
            if fault.method == method and resource is not None and fault.plural == resource.plural:
                fault.times -= 1
                if not fault.times:
                    self._faults.remove(fault)
                return fault.status
        return None

    async def _serve_version(self, request: kmock.Request) -> Obj:
        payload: Obj = await super()._serve_version(request)
        # Gap: kmock reports the core group as "/v1"; clients then build wrong URLs.
        payload["groupVersion"] = payload["groupVersion"].lstrip("/")
        return payload

    # --- reads ---

    async def _serve_fetch(self, request: kmock.Request) -> Obj:
        async with self._lock:
            return self._get(self._key(request))

    async def _serve_list(self, request: kmock.Request) -> Obj:
        # Gaps: no kind/apiVersion and a dummy resourceVersion on lists; selectors ignored.
        kind, api_version = self._kind(request.resource)
        matches = _selector(request.params.get("labelSelector"))
        async with self._lock:
            items = [obj for key, obj in self._scan(request) if matches(obj)]
            rv = str(self._rv)
        return {
            "apiVersion": api_version,
            "kind": f"{kind}List",
            "metadata": {"resourceVersion": rv},
            "items": items,
        }

    async def _serve_watch(self, request: kmock.Request) -> AsyncIterator[Any]:
        # Gaps: kmock replays every object as ADDED even with ?resourceVersion=N (kopf's
        # watch after its list), ignores selectors, never bookmarks and never times out.
        self._kind(request.resource)
        yield b""  # kmock: send the headers now
        selector = request.params.get("labelSelector") or ""
        with self._guard:
            self.watch_selectors.setdefault(request.resource.plural, set()).add(selector)
        matches = _selector(selector)
        since, loop = request.params.get("resourceVersion"), asyncio.get_running_loop()
        deadline = loop.time() + float(request.params.get("timeoutSeconds") or 3600)
        async with self._lock:
            if not since or since == "0":
                backlog = [{"type": "ADDED", "object": obj} for _, obj in self._scan(request)]
                seen = self._rv
            elif int(since) < self._forgotten_rv:
                backlog, seen = [{"type": "ERROR", "object": {"kind": "Status", "code": 410}}], -1
            else:
                backlog, seen = self._events_after(request, int(since))
        if seen < 0:
            yield backlog[0]
            return
        while True:
            for event in backlog:
                if matches(event["object"]):
                    yield event
            if loop.time() >= deadline:
                return
            async with self._changed:
                try:
                    wait = min(BOOKMARK_SECONDS, deadline - loop.time())
                    newer = functools.partial(self._is_newer, seen)
                    await asyncio.wait_for(self._changed.wait_for(newer), wait)
                except TimeoutError:
                    pass
                backlog, seen = self._events_after(request, seen)
            if not backlog and request.params.get("allowWatchBookmarks") == "true":
                meta = {"resourceVersion": str(seen)}
                yield {"type": "BOOKMARK", "object": {"kind": "Bookmark", "metadata": meta}}

    def _is_newer(self, rv: int) -> bool:
        return self._rv > rv

    def _events_after(self, request: kmock.Request, rv: int) -> tuple[list[Obj], int]:
        # Newest first, stopping at `rv`: each write wakes every watch, and a scan of the
        # whole history per wake-up made N=200 deployments spend most time here.
        newer = itertools.takewhile(lambda entry: entry[0] > rv, reversed(self._events))
        events = [
            event
            for _, resource, namespace, event in newer
            if resource == request.resource
            if request.namespace is None or namespace == request.namespace
        ]
        return events[::-1], self._rv

    # --- writes ---

    async def _serve_create(self, request: kmock.Request) -> kmock.Response:
        body = copy.deepcopy(request.data)
        meta = body.setdefault("metadata", {})
        generated = not meta.get("name") and meta.get("generateName")
        key = (request.resource, request.namespace or meta.get("namespace"), meta.get("name"))
        async with self._lock:
            for _ in range(8 if generated else 0):
                # Gap: kopf posts Events with generateName; kmock stores them all under None.
                # A clash retries with another suffix, as API servers do since 1.31
                # (RetryGenerateName).
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
                key = (*key[:2], meta["name"])
                if key not in self.objects:
                    break
            if key in self.objects:
                raise kmock.KubernetesError(409, "AlreadyExists", f"{key[2]} already exists")
            return kmock.Response(status=201, payload=self._create(key, body))

    async def _serve_update(self, request: kmock.Request) -> kmock.Response:
        content_type = _header(request, "Content-Type").split(";")[0].strip()
        key = self._key(request)
        async with self._lock:
            if content_type == APPLY and key not in self.objects:
                # Gap: server-side apply creates a missing object; kmock answers 404.
                return kmock.Response(status=201, payload=self._apply(key, request, None))
            old = self._get(key)
            if content_type == APPLY:
                new = self._apply(key, request, old)
            elif content_type == JSON_PATCH:
                new = _json_patch(old, request.data)
            else:
                new = merge_patch(old, request.data)
            if request.data and isinstance(request.data, dict):
                wanted = (request.data.get("metadata") or {}).get("resourceVersion")
                if wanted and wanted != old["metadata"]["resourceVersion"]:
                    raise kmock.KubernetesError(409, "Conflict", "the object has been modified")
            new = self._through(key, old, new, request.subresource)
            # NOTE: always an explicit status: kmock keeps the last one on the shared reaction.
            return kmock.Response(status=200, payload=self._update(key, old, new))

    async def _serve_delete(self, request: kmock.Request) -> Obj:
        key = self._key(request)
        async with self._lock:
            obj = self._get(key)
            if not obj["metadata"].get("finalizers"):
                return self._remove(key)
            if obj["metadata"].get("deletionTimestamp"):
                return obj
            # Gap (kept from kmock): finalizers hold the object with a deletionTimestamp.
            meta = {**obj["metadata"], "deletionTimestamp": _now()}
            return self._update(key, obj, {**obj, "metadata": meta})

    def _apply(self, key: Key, request: kmock.Request, old: Obj | None) -> Obj:
        """Server-side apply: merge the applied fields (lists whole), and drop fields this
        field manager applied before but no longer does, as the real one does."""
        body = yaml.safe_load(request.text) or {}
        manager = request.params.get("fieldManager", "")
        paths = set(_leaf_paths(body))
        owned = self._applied.setdefault(key, {})
        dropped, owned[manager] = owned.get(manager, set()) - paths, paths
        if old is None:
            return self._create(key, body)
        new = merge_patch(copy.deepcopy(old), body)
        for path in dropped:
            _drop(new, path)
        return new

    def _through(self, key: Key, old: Obj, new: Obj, subresource: str | None) -> Obj:
        """Gap: with a status subresource, the main resource ignores status changes and
        /status changes nothing else; kmock merges both everywhere."""
        if "status" not in self.resources[key[0]].subresources:
            return new
        if subresource == "status":
            return {**old, "status": new.get("status")} if "status" in new else _without(old)
        return {**new, "status": old["status"]} if "status" in old else _without(new)

    def _create(self, key: Key, body: Obj) -> Obj:
        # Gap: kmock sets no uid, resourceVersion, generation or creationTimestamp, and
        # stores no kind/apiVersion.
        kind, api_version = self._kind(key[0])
        meta = {**body.get("metadata", {}), "name": key[2], "uid": str(uuid.uuid4())}
        if key[1]:
            meta["namespace"] = key[1]
        meta.update(generation=1, creationTimestamp=_now())
        obj = {**body, "apiVersion": api_version, "kind": kind, "metadata": meta}
        created = self._store(key, _without(obj) if "status" in obj else obj, "ADDED")
        if meta.get("ownerReferences") and not _owners(created) & self._live_uids():
            # The garbage collector deletes dependents whose owners are all gone, including
            # ones created after their owner's deletion (say, by a reconcile racing it).
            self._remove(key)
        return created

    def _update(self, key: Key, old: Obj, new: Obj) -> Obj:
        meta = {**new.get("metadata", {})}
        for field in ("name", "namespace", "uid", "creationTimestamp", "resourceVersion"):
            if field in old["metadata"]:
                meta[field] = old["metadata"][field]
        new = {**new, "metadata": meta}
        if new == old:
            return old  # a no-op write bumps nothing and sends no event, as on a real server
        if _spec(new) != _spec(old):
            # Gap: generation moves on spec changes only (not metadata, not status).
            meta["generation"] = int(old["metadata"].get("generation") or 0) + 1
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            self.objects[key] = new  # the last finalizer is gone: delete for real
            return self._remove(key)
        return self._store(key, new, "MODIFIED")

    def _remove(self, key: Key) -> Obj:
        """Delete, then cascade as the garbage collector would in the background: objects
        whose every owner is gone are deleted too (finalizers honoured)."""
        obj = self._get(key)
        del self.objects[key]
        self._collections.get((key[0], key[1]), {}).pop(key, None)
        self._uids.discard(obj["metadata"]["uid"])
        self._applied.pop(key, None)
        gone = self._record(key, obj, "DELETED")
        live = self._live_uids()
        for child_key, child in self._scan_all():
            owners = _owners(child)
            if obj["metadata"]["uid"] in owners and not owners & live:
                if child["metadata"].get("finalizers"):
                    meta = {**child["metadata"], "deletionTimestamp": _now()}
                    self._update(child_key, child, {**child, "metadata": meta})
                else:
                    self._remove(child_key)
        return gone

    def _store(self, key: Key, obj: Obj, kind: str) -> Obj:
        stored = self._record(key, obj, kind)
        self.objects[key] = stored
        self._collections.setdefault((key[0], key[1]), {})[key] = None
        self._uids.add(stored["metadata"]["uid"])
        return stored

    def _record(self, key: Key, obj: Obj, event: str) -> Obj:
        self._rv += 1
        stored = {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(self._rv)}}
        if len(self._events) == self._events.maxlen:
            self._forgotten_rv = self._events[0][0]
        self._events.append((self._rv, key[0], key[1], {"type": event, "object": stored}))
        self._changed.notify_all()
        return stored

    # --- lookups ---

    def _key(self, request: kmock.Request) -> Key:
        self._kind(request.resource)
        return request.resource, request.namespace, request.name or ""

    def _get(self, key: Key) -> Obj:
        if key not in self.objects:
            raise kmock.KubernetesObjectNotFoundError(reason="NotFound", message=f"{key[2]}")
        return self.objects[key].raw

    def _scan(self, request: kmock.Request) -> list[tuple[Key, Obj]]:
        # Gap: kmock scans every object of every kind for each list; at N=200 deployments
        # (~2,000 objects) that made lists the emulator's main cost.
        collections_ = [
            keys
            for (resource, namespace), keys in self._collections.items()
            if resource == request.resource
            if request.namespace is None or namespace == request.namespace
        ]
        return [(key, self.objects[key].raw) for keys in collections_ for key in list(keys)]

    def _scan_all(self) -> list[tuple[Key, Obj]]:
        return [(key, self.objects[key].raw) for key in list(self.objects)]

    def _live_uids(self) -> set[str]:
        return self._uids

    def _kind(self, resource: kmock.resource | None) -> tuple[str, str]:
        if resource is None or resource not in self.resources:
            raise kmock.KubernetesResourceNotFoundError()
        group_version = f"{resource.group}/{resource.version}".lstrip("/")
        return str(self.resources[resource].kind), group_version


REASONS = {409: "Conflict", 422: "Invalid", 500: "InternalError", 503: "ServiceUnavailable"}


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def verb(method: str, name: str | None, params: Any, content_type: str) -> str:
    """The API verb of a request, as RBAC and audit logs name it, with `apply` told apart
    from other patches (server-side apply is a PATCH with the apply content type)."""
    if method == "GET":
        if str(params.get("watch", "")).lower() in ("true", "1"):
            return "watch"
        return "get" if name else "list"
    if method == "PATCH":
        return "apply" if content_type == APPLY else "patch"
    return {"POST": "create", "PUT": "update", "DELETE": "delete"}.get(method, method.lower())


def _request_key(request: kmock.Request, method: str) -> Request:
    resource = request.resource.plural if request.resource is not None else "-"
    if request.subresource:
        resource = f"{resource}/{request.subresource}"
    content_type = _header(request, "Content-Type").split(";")[0].strip()
    kind = verb(method, request.name, request.params, content_type)
    return _header(request, "User-Agent"), kind, str(resource)


def _header(request: kmock.Request, name: str) -> str:
    return next((v for k, v in request.headers.items() if k.lower() == name.lower()), "")


def _owners(obj: Obj) -> set[str]:
    return {ref.get("uid") for ref in obj["metadata"].get("ownerReferences") or []}


def _spec(obj: Obj) -> Obj:
    return {key: value for key, value in obj.items() if key not in ("metadata", "status")}


def _without(obj: Obj, field: str = "status") -> Obj:
    return {key: value for key, value in obj.items() if key != field}


def merge_patch(old: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: dicts merge, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    merged = dict(old) if isinstance(old, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


def _json_patch(old: Obj, ops: list[Obj]) -> Obj:
    """Gap: a failed 'test' op (kopf's resourceVersion guard on finalizer patches) is a
    422 on a real server, which kopf retries; in kmock it is a 500."""
    try:
        return dict(jsonpatch.apply_patch(old, ops, in_place=False))
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as error:
        raise kmock.KubernetesError(422, "Invalid", str(error)) from None


def _leaf_paths(obj: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if not isinstance(obj, dict) or not obj:
        return [prefix]
    return [path for key, value in obj.items() for path in _leaf_paths(value, (*prefix, key))]


def _drop(obj: Obj, path: tuple[str, ...]) -> None:
    for key in path[:-1]:
        obj = obj.get(key) if isinstance(obj.get(key), dict) else {}
    obj.pop(path[-1], None)


def _selector(text: str | None) -> Callable[[Obj], bool]:
    """Gap: kmock ignores labelSelector. Equality-based terms only: a=b, a==b, a!=b, a, !a."""
    if text and "(" in text:
        raise kmock.KubernetesError(400, "BadRequest", "set-based selectors are not emulated")
    terms = [term.strip() for term in (text or "").split(",") if term.strip()]

    def matches(obj: Obj) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        for term in terms:
            if "!=" in term:
                key, value = term.split("!=", 1)
                ok = labels.get(key.strip()) != value.strip()
            elif "=" in term:
                key, value = term.split("=", 1)
                ok = labels.get(key.strip()) == value.lstrip("=").strip()
            else:
                ok = (term[1:] not in labels) if term.startswith("!") else term in labels
            if not ok:
                return False
        return True

    return matches
