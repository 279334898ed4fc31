"""The local cluster's `batchapi` host: the tests' Batch API server on the cluster network.

The cluster runs the `openai` provider against this host rather than the `local` provider: production's
provider is a service on another machine that keeps the batch state itself, and this host is exactly that
shape, reached over the network through the official SDK by every pipeline host. (The `local` provider keeps
its batches in a folder, i.e. on one host.) `--content-delay` holds each result download open that long,
so the cluster test can kill an ingest run in the middle of its download.
"""

from __future__ import annotations

import argparse
import signal
import threading
import time
from typing import Any

from tests.fake_batch_api import FakeBatchAPI


class ClusterBatchAPI(FakeBatchAPI):
    def __init__(self, host: str, port: int, content_delay: float) -> None:
        super().__init__(host, port)
        self.content_delay = content_delay

    def handle(self, method: str, path: str, query: dict[str, list[str]], body: bytes, headers: Any) -> tuple:
        if method == "GET" and path.endswith("/content"):
            time.sleep(self.content_delay)  # outside the lock: other calls go on meanwhile
        return super().handle(method, path, query, body, headers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--content-delay", type=float, default=0.0, help="seconds before each result download")
    args = parser.parse_args()
    api = ClusterBatchAPI(args.host, args.port, args.content_delay).start()
    print(f"Batch API on {api.base_url}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    api.stop()


if __name__ == "__main__":
    main()
