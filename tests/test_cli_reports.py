"""The CLI's reports as a newcomer reads them: status before any snapshot, search over kinds that are not all
published, seeding more demo receipts, the cost report, and an import with several bad records."""

from __future__ import annotations

import json

from embedding_assets.cli import main as cli
from embedding_assets.cli.errors import EXIT_USAGE
from embedding_assets.data.importer import MAX_REPORTED, dump_receipts
from embedding_assets.domain.settings import Settings
from embedding_assets.wiring import Runtime


def out_of(capsys, *argv: str, code: int = 0) -> str:
    assert cli.main(list(argv)) == code
    return capsys.readouterr().out


def test_status_says_no_snapshot_yet(env, capsys):
    out = out_of(capsys, "status")
    assert "lines: no snapshot yet" in out and "words: no snapshot yet" in out
    assert "vNone" not in out and "None dimensions" not in out


def test_search_all_says_which_kinds_answered(env, capsys):
    out_of(capsys, "demo", "seed", "--receipts", "2")
    out_of(capsys, "run", "--kind", "lines")
    out = out_of(capsys, "search", "total", "--kind", "all")
    assert "(answered from lines; words: no snapshot yet, nothing searched)" in out


def test_demo_seed_adds_new_receipts_each_time_and_says_what_was_there(env, capsys):
    store = Runtime.from_settings(Settings.from_env(env)).store
    first = out_of(capsys, "demo", "seed", "--receipts", "5")
    assert first.startswith("added 5 demo receipts") and "0 receipts already there left unchanged, 5 in all" in first
    again = out_of(capsys, "demo", "seed", "--receipts", "5")
    assert again.startswith("added 5 demo receipts") and "5 receipts already there left unchanged, 10 in all" in again
    assert store.receipt_count() == 10
    assert "store already holds 10 receipts: not seeding" in out_of(capsys, "demo", "seed", "--if-empty")


def test_cost_puts_totals_first_sorts_receipts_and_says_the_provider_is_free(env, capsys):
    out_of(capsys, "demo", "seed", "--receipts", "4")
    out_of(capsys, "run", "--kind", "lines")
    lines = out_of(capsys, "cost", "--top", "2").splitlines()
    assert lines[0].startswith("total: ") and "$0.000000" in lines[0]
    assert "is free" in lines[1]
    assert lines[2].startswith("costliest receipts (of 4; --top N for more):")
    rows = lines[3:]
    assert len(rows) == 2
    report = json.loads(out_of(capsys, "cost", "--json"))
    ranked = sorted(report["receipts"], key=lambda r: (-r["cost_usd"], -r["prompt_tokens"]))
    assert report["receipts"] == ranked
    assert [f"{r['image_id']}:{r['receipt_id']}" for r in ranked[:2]] == [row.split()[0] for row in rows]
    assert len(out_of(capsys, "cost", "--top", "0").splitlines()) == 3 + 4


def test_import_names_every_bad_record_and_writes_nothing(env, capsys, tmp_path):
    from embedding_assets.data.demo import generate_receipts

    good = tmp_path / "good.ndjson"
    dump_receipts(generate_receipts(3, seed=2), good)
    records = good.read_text().splitlines()
    bad = [json.loads(r) for r in records]
    bad[0]["lines"][0]["text"] = 7
    bad[2]["receipt_id"] = 0
    path = tmp_path / "bad.ndjson"
    path.write_text("\n".join([json.dumps(bad[0]), "{not json", json.dumps(bad[1]), json.dumps(bad[2])]) + "\n")

    assert cli.main(["import", str(path)]) == EXIT_USAGE
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "import failed, nothing written: 3 bad records:"
    assert err[1].startswith("  line 1 (image ") and "lines[0].text" in err[1]
    assert err[2].startswith("  line 2: invalid JSON")
    assert err[3].startswith("  line 4 (image ") and "receipt_id" in err[3]
    assert Runtime.from_settings(Settings.from_env(env)).store.receipt_count() == 0

    many = tmp_path / "many.ndjson"
    many.write_text("{not json\n" * (MAX_REPORTED + 5))
    assert cli.main(["import", str(many)]) == EXIT_USAGE
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"import failed, nothing written: {MAX_REPORTED + 5} bad records (the first {MAX_REPORTED}):"
    assert len(err) == 1 + MAX_REPORTED
