"""One moto server for the whole session, on 127.0.0.1, and fresh tables and buckets on it.

Fake credentials and a region are put in the environment for the session, and
the shared AWS config files are pointed away, so boto3 never reads a real
profile and no request can reach AWS: every client is given the loopback
endpoint explicitly.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterator

import pytest
from moto.server import ThreadedMotoServer

from resources.object_store.s3 import create_buckets
from resources.receipt_store.dynamodb_table import create_table

FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": "/nonexistent/aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def _one_request_at_a_time(server: ThreadedMotoServer) -> None:
    """Serialise the server's requests.

    moto checks a write's condition and applies the write in separate Python
    steps with no lock, so two threads could both pass the same condition;
    DynamoDB makes every single-item write atomic. Serving one request at a
    time gives the test server the guarantee the real service has, which is
    what the race tests rely on.
    """
    wsgi = server._server.app
    lock = threading.Lock()

    def app(environ, start_response):
        with lock:
            return list(wsgi(environ, start_response))

    server._server.app = app


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """The endpoint URL of a moto server bound to 127.0.0.1 on a port the OS picked."""
    with pytest.MonkeyPatch.context() as env:
        for name, value in FAKE_AWS_ENV.items():
            env.setenv(name, value)
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_REGION"):
            env.delenv(name, raising=False)
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        _one_request_at_a_time(server)
        host, port = server.get_host_and_port()
        try:
            yield f"http://{host}:{port}"
        finally:
            server.stop()


def new_table(endpoint: str) -> str:
    name = f"receipts-{uuid.uuid4().hex[:12]}"
    create_table(name, endpoint_url=endpoint)
    return name


def aws_backend_env(endpoint: str) -> dict[str, str]:
    """Variables selecting DynamoDB and S3, on a fresh table and fresh buckets."""
    suffix = uuid.uuid4().hex[:12]
    requests_bucket, chroma_bucket = f"requests-{suffix}", f"chroma-{suffix}"
    create_buckets([requests_bucket, chroma_bucket], endpoint_url=endpoint)
    return {
        "DYNAMODB_TABLE_NAME": new_table(endpoint),
        "S3_BUCKET": requests_bucket,
        "CHROMADB_BUCKET": chroma_bucket,
        "AWS_ENDPOINT_URL": endpoint,
    }
