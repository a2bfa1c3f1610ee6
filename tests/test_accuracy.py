"""The interpreter measured against labelled real-world reply lines."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

from probe.interpret import explain
from probe.model import Interpretation
from tests.conftest import FIXTURES, ROOT

CORPUS = Path(os.environ.get("SMTP_PROBE_CORPUS", ROOT.parent / "shared/corpus/reply-lines.tsv"))


def _rows(path: Path, text_col: str) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return [r for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE) if r[text_col]]


def _measure(rows: list[dict[str, str]], text_col: str, name: str) -> tuple[float, float]:
    cat_ok = retry_ok = 0
    misses: list[str] = []
    for r in rows:
        got = explain(r[text_col])
        assert isinstance(got, Interpretation), f"no reply found in {r[text_col]!r}"
        want_retry = r["retryable"].strip().lower() == "yes"
        if got.category == r["category"]:
            cat_ok += 1
        else:
            misses.append(
                f"  category {got.category} != {r['category']} (rule {got.rule.id}): "
                f"{r[text_col][:110]}"
            )
        if got.retryable == want_retry:
            retry_ok += 1
        else:
            misses.append(
                f"  retryable {got.retryable} != {want_retry} (rule {got.rule.id}): "
                f"{r[text_col][:110]}"
            )
    n = len(rows)
    cat_acc, retry_acc = cat_ok / n, retry_ok / n
    print(
        f"\n{name}: {n} lines, category accuracy {cat_acc:.1%}, retryable accuracy {retry_acc:.1%}"
    )
    print("\n".join(misses))
    return cat_acc, retry_acc


@pytest.mark.skipif(not CORPUS.exists(), reason=f"shared corpus not found at {CORPUS}")
def test_corpus_accuracy() -> None:
    cat_acc, retry_acc = _measure(_rows(CORPUS, "reply_line"), "reply_line", "corpus")
    assert cat_acc >= 0.95
    assert retry_acc >= 0.90


def test_fixture_accuracy() -> None:
    rows = _rows(FIXTURES / "replies.tsv", "input")
    assert len(rows) >= 100
    cat_acc, retry_acc = _measure(rows, "input", "fixtures")
    assert cat_acc >= 0.95
    assert retry_acc >= 0.95


def test_fixture_rules_decide() -> None:
    """Each fixture line that names a rule is decided by exactly that rule."""
    wrong = []
    for r in _rows(FIXTURES / "replies.tsv", "input"):
        if r.get("rule"):
            got = explain(r["input"])
            assert isinstance(got, Interpretation)
            if got.rule.id != r["rule"]:
                wrong.append(f"{got.rule.id} != {r['rule']}: {r['input'][:100]}")
    assert not wrong, "\n".join(wrong)
