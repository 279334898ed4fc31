"""The CLI on the AWS backends: create-table / create-buckets, then seed, import, run, status and search."""

from __future__ import annotations

import json
import uuid

from embedding_assets.cli import main as cli
from embedding_assets.data.importer import dump_receipts
from resources.receipt_store.dynamodb_table import dynamodb_client
from tests.support import line, receipt


def _cli(monkeypatch, capsys, env: dict[str, str], *argv: str) -> tuple[int, str, str]:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_cli_sets_up_aws_and_runs_on_it(tmp_path, moto_endpoint, monkeypatch, capsys):
    suffix = uuid.uuid4().hex[:12]
    env = {
        "DATA_DIR": str(tmp_path / "data"), "DAGSTER_HOME": str(tmp_path / "dagster"),
        "DYNAMODB_TABLE_NAME": f"cli-{suffix}", "S3_BUCKET": f"cli-requests-{suffix}",
        "CHROMADB_BUCKET": f"cli-chroma-{suffix}", "AWS_ENDPOINT_URL": moto_endpoint,
        "LOCK_DURATION_MINUTES": "1", "HEARTBEAT_INTERVAL_SECONDS": "2",
    }

    code, out, _ = _cli(monkeypatch, capsys, env, "aws", "create-table")
    assert code == 0 and "created" in out
    assert "already exists" in _cli(monkeypatch, capsys, env, "aws", "create-table")[1]
    table = dynamodb_client(moto_endpoint).describe_table(TableName=env["DYNAMODB_TABLE_NAME"])["Table"]
    assert {k["AttributeName"]: k["KeyType"] for k in table["KeySchema"]} == {"PK": "HASH", "SK": "RANGE"}
    assert {i["IndexName"] for i in table["GlobalSecondaryIndexes"]} == {"GSI1", "GSI2", "GSI3", "GSI4", "GSITYPE"}
    assert all(i["Projection"]["ProjectionType"] == "ALL" for i in table["GlobalSecondaryIndexes"])
    assert table["StreamSpecification"] == {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}

    code, out, _ = _cli(monkeypatch, capsys, env, "aws", "create-buckets")
    assert code == 0 and out.count("created") == 2
    assert _cli(monkeypatch, capsys, env, "aws", "create-buckets")[1].count("already exists") == 2
    assert _cli(monkeypatch, capsys, env, "aws", "create-table", "--table", f"other-{suffix}")[0] == 0
    monkeypatch.delenv("DYNAMODB_TABLE_NAME")
    assert _cli(monkeypatch, capsys, {}, "aws", "create-table")[0] == 2

    code, out, _ = _cli(monkeypatch, capsys, env, "demo", "seed", "--receipts", "2")
    assert code == 0 and f"DynamoDB table {env['DYNAMODB_TABLE_NAME']}" in out
    path = tmp_path / "one.json"
    dump_receipts([receipt([line(0, "HARBOR DELI", 0.1, 0.9), line(1, "TOTAL 8.50", 0.1, 0.8)], "Harbor Deli")], path)
    assert _cli(monkeypatch, capsys, env, "import", str(path))[0] == 0

    code, out, err = _cli(monkeypatch, capsys, env, "run", "--kind", "lines", "--timeout", "120")
    assert code == 0, out + err
    code, out, _ = _cli(monkeypatch, capsys, env, "status", "--json")
    items = json.loads(out)["lines"]["items"]
    assert code == 0 and set(items) <= {"SUCCESS", "NOISE"} and items["SUCCESS"] > 2
    code, out, _ = _cli(monkeypatch, capsys, env, "search", "TOTAL", "--merchant", "Harbor Deli", "--json")
    hits = json.loads(out)
    assert code == 0 and hits and {h["merchant_name"] for h in hits} == {"Harbor Deli"}
