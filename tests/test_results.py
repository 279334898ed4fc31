import base64
from pathlib import Path

import numpy as np
import orjson

from embedding_assets.domain.results import iter_results


def _ok_line(custom_id: str, vectors: list[np.ndarray], order: list[int], b64: bool, tokens: int = 7) -> bytes:
    data = [
        {
            "object": "embedding",
            "index": i,
            "embedding": base64.b64encode(vectors[i].astype("<f4").tobytes()).decode() if b64 else vectors[i].tolist(),
        }
        for i in order
    ]
    row = {
        "id": "batch_req_1",
        "custom_id": custom_id,
        "response": {
            "status_code": 200,
            "request_id": "r1",
            "body": {
                "object": "list",
                "data": data,
                "model": "m",
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            },
        },
        "error": None,
    }
    return orjson.dumps(row) + b"\n"


def _write(tmp_path: Path, lines: list[bytes]) -> Path:
    path = tmp_path / "out.jsonl"
    path.write_bytes(b"".join(lines))
    return path


def test_base64_and_float_embeddings_sorted_by_index(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    vectors = [rng.standard_normal(16).astype(np.float32) for _ in range(3)]
    path = _write(
        tmp_path,
        [
            _ok_line("b64", vectors, [2, 0, 1], b64=True, tokens=11),
            b"\n",
            _ok_line("flt", vectors, [1, 2, 0], b64=False),
        ],
    )

    results = list(iter_results(path))

    assert [r.custom_id for r in results] == ["b64", "flt"]
    for result in results:
        assert result.error is None and result.status_code == 200
        assert len(result.vectors) == 3
        for got, want in zip(result.vectors, vectors):
            assert got.dtype == np.float32
            np.testing.assert_array_equal(got, want)
    assert results[0].prompt_tokens == 11


def test_line_level_error_and_http_errors(tmp_path: Path) -> None:
    expired = {
        "id": "batch_req_2",
        "custom_id": "late",
        "response": None,
        "error": {"code": "batch_expired", "message": "This request could not be executed in time."},
    }
    server = {
        "id": "batch_req_3",
        "custom_id": "boom",
        "response": {
            "status_code": 500,
            "request_id": "r",
            "body": {
                "error": {"message": "The server had an error", "type": "server_error", "param": None, "code": None}
            },
        },
        "error": None,
    }
    bad_request = {
        "id": "batch_req_4",
        "custom_id": "empty",
        "response": {
            "status_code": 400,
            "request_id": "r",
            "body": {"error": {"message": "'input' is empty", "type": "invalid_request_error", "code": "bad_input"}},
        },
        "error": None,
    }
    path = _write(tmp_path, [orjson.dumps(r) + b"\n" for r in (expired, server, bad_request)])

    late, boom, empty = iter_results(path)

    assert late.vectors is None and late.status_code == 0
    assert late.error.startswith("batch_expired: This request")
    assert boom.status_code == 500 and boom.vectors is None
    assert boom.error == "HTTP 500: server_error: The server had an error"
    assert empty.status_code == 400 and empty.error == "HTTP 400: bad_input: 'input' is empty"


def test_malformed_lines_are_reported_not_raised(tmp_path: Path) -> None:
    good = _ok_line("fine", [np.ones(4, dtype=np.float32)], [0], b64=True)
    gap = orjson.loads(_ok_line("gap", [np.ones(4, dtype=np.float32)] * 2, [0, 1], b64=False))
    gap["response"]["body"]["data"][1]["index"] = 5
    garbled = orjson.loads(_ok_line("garbled", [np.ones(4, dtype=np.float32)], [0], b64=False))
    garbled["response"]["body"]["data"][0]["embedding"] = "not base64!"
    path = _write(
        tmp_path,
        [b"{not json\n", b"[1, 2]\n", orjson.dumps(gap) + b"\n", orjson.dumps(garbled) + b"\n", good],
    )

    results = list(iter_results(path))

    assert [(r.custom_id, r.error.split(":")[0] if r.error else None) for r in results] == [
        ("", "malformed line 1"),
        ("", "malformed line 2"),
        ("gap", "malformed line 3"),
        ("garbled", "malformed line 4"),
        ("fine", None),
    ]
    assert all(r.vectors is None for r in results[:4])
    np.testing.assert_array_equal(results[4].vectors[0], np.ones(4, dtype=np.float32))
