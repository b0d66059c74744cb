"""Registry authentication as Docker and ORAS do it: anonymous first; on a 401, the
challenge in `WWW-Authenticate` says how: `Basic` (send the user and password) or `Bearer
realm=...,service=...,scope=...` (get a token from the realm, with the user and password
when there are any, and send it). https://distribution.github.io/distribution/spec/auth/token/

The user and password come from a docker `config.json` (`--credentials-file`, the Secret
in `uri.credentialsSecretRef`, e.g. the `.dockerconfigjson` key of a
`kubernetes.io/dockerconfigjson` Secret).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import threading
import urllib.request
from pathlib import Path
from urllib.parse import quote, urlencode, urlsplit

from r1_runtime.fetch.errors import FetchError, UsageError
from r1_runtime.fetch.http import HttpClient

CONFIG_FORMAT = 'a docker config.json {"auths": {"<registry>": {"auth": "<base64 user:password>"}}}'
DOCKER_HUB = {"docker.io", "index.docker.io", "registry-1.docker.io"}
CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


class RegistryAuth:
    """Adds `Authorization` to requests to the registry `host`: nothing until a 401, then
    what its challenge asks for. A token that expires during a long download is renewed
    on the next 401. Shared by the download threads."""

    def __init__(self, *, host: str, scope: str, basic: str | None, credentials_from: str) -> None:
        self._host = host
        self._scope = scope
        self._basic = basic
        self._credentials_from = credentials_from
        self._header: str | None = None
        self._lock = threading.Lock()

    def apply(self, request: urllib.request.Request) -> None:
        if self._header and urlsplit(request.full_url).netloc == self._host:
            request.add_header("Authorization", self._header)

    def renew(self, challenge: str) -> bool:
        scheme, _, rest = challenge.partition(" ")
        params = dict(CHALLENGE_PARAM.findall(rest))
        with self._lock:
            if scheme.lower() == "basic":
                header = f"Basic {self._basic}" if self._basic else None
                renewed = header is not None and header != self._header
            elif scheme.lower() == "bearer" and params.get("realm"):
                header = f"Bearer {self._token(params)}"
                renewed = True
            else:
                return False
            self._header = header
            return renewed

    def _token(self, params: dict[str, str]) -> str:
        query = {"service": params.get("service", ""), "scope": params.get("scope") or self._scope}
        url = (
            f"{params['realm']}?{urlencode({k: v for k, v in query.items() if v}, quote_via=quote)}"
        )
        headers = {"Authorization": f"Basic {self._basic}"} if self._basic else {}
        data = HttpClient(explain=self._explain_token).open(url, headers=headers).body.read()
        try:
            answer = json.loads(data)
            return str(answer.get("token") or answer["access_token"])
        except (ValueError, KeyError, TypeError, AttributeError):
            raise FetchError(f"the token service {params['realm']} answered no token") from None

    def _explain_token(self, status: int, url: str, error_code: str) -> str:
        realm = url.partition("?")[0]
        if status in (401, 403) and self._basic:
            return (
                f"the token service {realm} rejected the user and password for {self._host} "
                f"in {self._credentials_from}: check its auths entry"
            )
        if status in (401, 403):
            return (
                f"the token service {realm} wants credentials for {self._scope}: set "
                f"uri.credentialsSecretRef to {CONFIG_FORMAT} (read from --credentials-file)"
            )
        return f"token request to {realm} failed"


def registry_basic(text: str | None, path: Path | None, registry: str) -> str | None:
    """The base64 `user:password` for `registry` in a docker config.json, or None without
    a file. A file without an entry for `registry` is a UsageError naming those it has."""
    if text is None:
        return None
    where = f"--credentials-file {path}"
    try:
        auths = json.loads(text)["auths"]
        entries = {_host(key): entry for key, entry in auths.items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        raise UsageError(f"{where}: expected {CONFIG_FORMAT}") from None
    wanted = DOCKER_HUB if registry in DOCKER_HUB else {registry}
    entry = next((entries[host] for host in entries if host in wanted), None)
    if not isinstance(entry, dict):
        have = ", ".join(sorted(entries)) or "none"
        raise UsageError(f"{where} has no auths entry for {registry} (it has: {have})")
    if entry.get("auth"):
        return _checked_auth(str(entry["auth"]), where)
    if entry.get("username") and entry.get("password"):
        return base64.b64encode(f"{entry['username']}:{entry['password']}".encode()).decode()
    raise UsageError(
        f"{where}: the entry for {registry} has neither auth nor username and password "
        "(an identitytoken is not supported)"
    )


def _checked_auth(auth: str, where: str) -> str:
    try:
        decoded = base64.b64decode(auth, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        decoded = ""
    if ":" not in decoded:
        raise UsageError(f"{where}: an auth value is not base64 of user:password")
    return auth


def _host(key: str) -> str:
    """`https://index.docker.io/v1/` -> `index.docker.io`; `ghcr.io` stays."""
    return urlsplit(key if "://" in key else f"//{key}").netloc
