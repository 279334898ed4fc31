"""`make eval` runs end to end on a few receipts; its figures are not checked (quality lives in `make eval`)."""

from __future__ import annotations

from tests.bench.eval import main


def test_eval_prints_every_mode_and_the_recall(capsys) -> None:
    main(["--receipts", "4", "--seed", "2"])
    out = capsys.readouterr().out
    for mode in ("hybrid", "vector", "lexical"):
        assert f"\n{mode}" in out
    assert "TOTAL AMOUNT" in out and "recall@10 against brute force" in out
