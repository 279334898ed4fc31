import orjson
import pytest

from embedding_assets.domain.batching import Budget, plan_files, request_line
from embedding_assets.domain.formatting import ReceiptRequests, Request


def receipt(n_requests: int, rid: int, text: str = "MILK 3.99") -> ReceiptRequests:
    out = ReceiptRequests("img", rid)
    for i in range(n_requests):
        out.requests.append(Request(f"IMAGE#img#RECEIPT#{rid:05d}#LINE#{i:05d}", text, [f"k{rid}-{i}"], {"text": text},
                                    tokens=4))
    return out


def test_request_line_is_the_batch_api_shape_asking_for_base64():
    line = orjson.loads(request_line(Request("id-1", "hello", ["id-1"], {}, 1), "text-embedding-3-small", 512))
    assert line == {"custom_id": "id-1", "method": "POST", "url": "/v1/embeddings",
                    "body": {"model": "text-embedding-3-small", "input": "hello", "encoding_format": "base64",
                             "dimensions": 512}}
    assert "dimensions" not in orjson.loads(request_line(Request("i", "x", [], {}, 1), "m", None))["body"]


@pytest.mark.parametrize("budget", [Budget(max_requests=10), Budget(max_bytes=2500), Budget(max_tokens=40)])
def test_files_stay_within_each_budget_and_never_split_a_receipt(budget):
    receipts = [receipt(4, rid) for rid in range(1, 21)]
    oversized = []
    files = list(plan_files(receipts, budget, "m", None, oversized))
    assert not oversized
    assert sum(f.request_count for f in files) == 80
    for f in files:
        assert f.request_count <= budget.max_requests
        assert f.bytes <= budget.max_bytes and f.bytes == sum(len(x) for x in f.lines)
        assert budget.max_tokens is None or f.tokens <= budget.max_tokens
        assert sum(len(r.requests) for r in f.receipts) == f.request_count
    seen = [r.receipt_id for f in files for r in f.receipts]
    assert seen == list(range(1, 21))
    assert len(files) > 1


def test_a_receipt_bigger_than_a_file_is_set_aside_and_the_rest_go_on():
    oversized = []
    files = list(
        plan_files([receipt(2, 1), receipt(50, 2), receipt(3, 3)], Budget(max_requests=10), "m", None, oversized)
    )
    assert [r.receipt_id for f in files for r in f.receipts] == [1, 3]
    assert [(r.receipt_id, "requests" in why) for r, why in oversized] == [(2, True)]


def test_budget_rejects_nonsense():
    with pytest.raises(ValueError):
        Budget(max_requests=0)
