"""SigV4 against AWS's published examples: `get-vanilla` of the Signature Version 4 test
suite, and the GetObject (with Range) and ListObjects examples of the S3 API reference
("Signature Calculations for the Authorization Header: Transferring Payload in a Single
Chunk"). Each example's expected values are AWS's, copied here."""

from __future__ import annotations

import datetime
import hashlib

import pytest
from r1_runtime.fetch.sigv4 import EMPTY_SHA256, Credentials, Signer, canonical_request

SUITE_KEY = Credentials(
    access_key_id="AKIDEXAMPLE", secret_access_key="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
)
S3_KEY = Credentials(
    access_key_id="AKIAIOSFODNN7EXAMPLE",
    secret_access_key="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
)


def test_get_vanilla_of_the_sigv4_test_suite() -> None:
    headers = {"X-Amz-Date": "20150830T123600Z"}
    canonical, signed = canonical_request(
        "GET", "https://example.amazonaws.com/", headers, EMPTY_SHA256
    )
    assert signed == "host;x-amz-date"
    assert canonical == (
        "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\n"
        "host;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    assert hashlib.sha256(canonical.encode()).hexdigest() == (
        "bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63"
    )
    signer = Signer(credentials=SUITE_KEY, region="us-east-1", service="service")
    assert signer.authorization("GET", "https://example.amazonaws.com/", headers, EMPTY_SHA256) == (
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
        "SignedHeaders=host;x-amz-date, "
        "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
    )


@pytest.mark.parametrize(
    ("url", "headers", "signed", "signature"),
    [
        pytest.param(
            "https://examplebucket.s3.amazonaws.com/test.txt",
            {"Range": "bytes=0-9"},
            "host;range;x-amz-content-sha256;x-amz-date",
            "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
            id="GetObject with a Range header",
        ),
        pytest.param(
            "https://examplebucket.s3.amazonaws.com/?max-keys=2&prefix=J",
            {},
            "host;x-amz-content-sha256;x-amz-date",
            "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7",
            id="ListObjects with a query string",
        ),
    ],
)
def test_the_s3_api_reference_examples(
    url: str, headers: dict[str, str], signed: str, signature: str
) -> None:
    headers |= {"x-amz-content-sha256": EMPTY_SHA256, "x-amz-date": "20130524T000000Z"}
    signer = Signer(credentials=S3_KEY, region="us-east-1")
    assert signer.authorization("GET", url, headers, EMPTY_SHA256) == (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
        f"SignedHeaders={signed}, Signature={signature}"
    )


def test_the_headers_a_request_gets_sign_its_own_x_amz_headers_and_the_session_token() -> None:
    key = Credentials(access_key_id="AKID", secret_access_key="secret", session_token="tok en")
    now = datetime.datetime(2026, 11, 29, 6, 0, 5, tzinfo=datetime.UTC)
    headers = Signer(credentials=key, region="auto").headers(
        "HEAD", "http://127.0.0.1:9000/b/k%20v", {"x-amz-checksum-mode": "ENABLED"}, now
    )
    assert headers["x-amz-date"] == "20261129T060005Z"
    assert headers["x-amz-security-token"] == "tok en"
    assert headers["x-amz-content-sha256"] == EMPTY_SHA256
    assert headers["Authorization"].startswith(
        "AWS4-HMAC-SHA256 Credential=AKID/20261129/auto/s3/aws4_request, SignedHeaders=host;"
        "x-amz-checksum-mode;x-amz-content-sha256;x-amz-date;x-amz-security-token, Signature="
    )


def test_the_canonical_query_encodes_slashes_pluses_and_sorts_by_name() -> None:
    canonical, _ = canonical_request(
        "GET",
        "http://h/bucket/?prefix=r1/demo/&list-type=2&continuation-token=%2B%2B//3%3D",
        {"x-amz-date": "20261129T060005Z"},
        EMPTY_SHA256,
    )
    assert canonical.splitlines()[1:3] == [
        "/bucket/",
        "continuation-token=%2B%2B%2F%2F3%3D&list-type=2&prefix=r1%2Fdemo%2F",
    ]
