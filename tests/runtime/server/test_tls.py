"""TLS with certificates made here (trustme): HTTPS with TLS 1.2 at least, and mutual TLS
where the API needs a client certificate signed by the client CA while the kubelet's
probes (no certificate) still reach /health, /ready and /metrics."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trustme
from r1_runtime.server.serve import ssl_context

from .harness import API_KEY, RunningServer, make_config, running_server


@pytest.fixture(scope="module")
def server_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def client_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def tls_files(
    tmp_path_factory: pytest.TempPathFactory, server_ca: trustme.CA, client_ca: trustme.CA
) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("tls")
    cert = server_ca.issue_cert("127.0.0.1", "localhost")
    files = {
        "tls_cert": directory / "tls.crt",
        "tls_key": directory / "tls.key",
        "tls_client_ca": directory / "ca.crt",
    }
    cert.cert_chain_pems[0].write_to_path(files["tls_cert"])
    for pem in cert.cert_chain_pems[1:]:
        pem.write_to_path(files["tls_cert"], append=True)
    cert.private_key_pem.write_to_path(files["tls_key"])
    client_ca.cert_pem.write_to_path(files["tls_client_ca"])
    return files


@pytest.fixture(scope="module")
def https_server(demo_model_dir: Path, tls_files: dict[str, Path]) -> Iterator[RunningServer]:
    files = {key: tls_files[key] for key in ("tls_cert", "tls_key")}
    with running_server(lambda port: make_config(demo_model_dir, port=port, **files)) as running:
        yield running


@pytest.fixture(scope="module")
def mtls_server(demo_model_dir: Path, tls_files: dict[str, Path]) -> Iterator[RunningServer]:
    with running_server(lambda port: make_config(demo_model_dir, port=port, **tls_files)) as run:
        yield run


def client_context(
    server_ca: trustme.CA, client_cert: trustme.LeafCert | None = None
) -> ssl.SSLContext:
    context = ssl.create_default_context()
    server_ca.configure_trust(context)
    if client_cert is not None:
        client_cert.configure_cert(context)
    return context


def get(server: RunningServer, path: str, context: ssl.SSLContext) -> httpx.Response:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    return httpx.get(f"{server.base_url}{path}", headers=headers, verify=context)


def test_https_serves_the_api(https_server: RunningServer, server_ca: trustme.CA) -> None:
    assert get(https_server, "/v1/models", client_context(server_ca)).status_code == 200


def test_a_client_that_does_not_trust_the_ca_cannot_connect(https_server: RunningServer) -> None:
    with pytest.raises(httpx.ConnectError):
        get(https_server, "/health", ssl.create_default_context())


def negotiated_version(server: RunningServer, context: ssl.SSLContext) -> str | None:
    host, port = "127.0.0.1", int(server.base_url.rsplit(":", 1)[1])
    with (
        socket.create_connection((host, port)) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        return tls.version()


def test_tls_1_3_is_preferred_and_1_2_accepted(
    https_server: RunningServer, server_ca: trustme.CA
) -> None:
    assert negotiated_version(https_server, client_context(server_ca)) == "TLSv1.3"
    context = client_context(server_ca)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    assert negotiated_version(https_server, context) == "TLSv1.2"


def test_nothing_below_tls_1_2_is_offered(https_server: RunningServer) -> None:
    context = ssl_context(https_server.state.config)
    assert context is not None and context.minimum_version == ssl.TLSVersion.TLSv1_2


@pytest.mark.parametrize("path", ["/health", "/ready", "/metrics"])
def test_probes_need_no_client_certificate(
    mtls_server: RunningServer, server_ca: trustme.CA, path: str
) -> None:
    assert get(mtls_server, path, client_context(server_ca)).status_code == 200


def test_the_api_needs_a_client_certificate(
    mtls_server: RunningServer, server_ca: trustme.CA
) -> None:
    response = get(mtls_server, "/v1/models", client_context(server_ca))
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "client_certificate_required"


def test_a_client_certificate_from_the_client_ca_is_accepted(
    mtls_server: RunningServer, server_ca: trustme.CA, client_ca: trustme.CA
) -> None:
    context = client_context(server_ca, client_ca.issue_cert("client@example.com"))
    assert get(mtls_server, "/v1/models", context).status_code == 200


def test_a_client_certificate_from_another_ca_fails_the_handshake(
    mtls_server: RunningServer, server_ca: trustme.CA
) -> None:
    context = client_context(server_ca, trustme.CA().issue_cert("intruder@example.com"))
    with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
        get(mtls_server, "/v1/models", context)
