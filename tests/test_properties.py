"""Property tests over the interpreter and every renderer: total, safe, faithful."""

from __future__ import annotations

import json
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from probe.catalog import locale
from probe.interpret import explain
from probe.model import Interpretation
from probe.render import explain as render
from probe.text import safe

RAW_CONTROL = re.compile(
    r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ud800-\udfff]"
)
LANGS = ("en", "zh", "de", "ko")

reply_like = st.builds(
    lambda code, sep, enh, text: f"{code}{sep}{enh}{text}",
    st.integers(100, 999).map(str),
    st.sampled_from([" ", "-", ""]),
    st.sampled_from(["", "5.1.1 ", "4.7.0 ", "2.0.0 ", "5.7.999 ", "9.9.9 "]),
    st.text(max_size=120),
)
anything = st.one_of(
    st.text(max_size=300),
    reply_like,
    st.binary(max_size=300).map(lambda b: b.decode("utf-8", "surrogateescape")),
)


@settings(max_examples=500, deadline=None)
@given(item=anything, lang=st.sampled_from(LANGS))
def test_explain_is_total_and_renders_safely(item: str, lang: str) -> None:
    e = explain(item)
    loc = locale(lang)
    text = render.to_text(e, loc)
    assert not RAW_CONTROL.search(text), repr(text)
    doc = render.to_json(e, loc)
    json.dumps(doc, ensure_ascii=False)  # serialisable, whatever came in
    if isinstance(e, Interpretation):
        assert doc["category"] and doc["description"] and doc["fix"] and doc["when"]
        assert isinstance(doc["retryable"], bool)


@settings(max_examples=300, deadline=None)
@given(s=st.text(max_size=200))
def test_safe_leaves_no_control_character(s: str) -> None:
    assert not RAW_CONTROL.search(safe(s))


@settings(max_examples=300, deadline=None)
@given(
    code=st.sampled_from([250, 251, 421, 450, 451, 452, 500, 501, 530, 550, 551, 552, 553, 554]),
    detail=st.tuples(st.integers(0, 7), st.integers(0, 9)),
    words=st.lists(st.from_regex(r"[A-Za-z][a-z]{0,9}", fullmatch=True), min_size=1, max_size=10),
    lines=st.integers(1, 3),
)
def test_parse_then_render_round_trip(
    code: int, detail: tuple[int, int], words: list[str], lines: int
) -> None:
    enhanced = f"{code // 100}.{detail[0]}.{detail[1]}"
    text = " ".join(words)
    parts = [" ".join(words[i::lines]) for i in range(lines) if words[i::lines]]
    wire = "\r\n".join(
        [f"{code}-{enhanced} {p}" for p in parts[:-1]] + [f"{code} {enhanced} {parts[-1]}"]
    )
    e = explain(wire)
    assert isinstance(e, Interpretation)
    doc = render.to_json(e, locale("en"))
    assert doc["code"] == code and doc["enhanced"] == enhanced
    assert doc["class"] == code // 100
    assert doc["text"] == " ".join(" ".join(parts).split())
    assert sorted(doc["text"].split()) == sorted(text.split())
    head = render.to_text(e, locale("en")).splitlines()[0]
    assert head == f"{code} {enhanced} {doc['text']}"[:200] or head.endswith("…")


def test_changed_options_equal_what_replace_makes() -> None:
    # A batch copies its options for every target with `changed`, which skips __init__.
    from dataclasses import replace

    import pytest

    from probe.config import ProbeRequest, SessionOptions, Timeouts, changed
    from probe.target import parse_target

    opts = SessionOptions(helo="h.test", rcpts=("a@b.test",), starttls="require")
    later = changed(opts, deadline=12.5, timeouts=Timeouts(connect=1.0))
    assert later == replace(opts, deadline=12.5, timeouts=Timeouts(connect=1.0))
    assert later.deadline == 12.5 and later.starttls is opts.starttls and opts.deadline is None
    req = ProbeRequest(target=parse_target("a.test"), session=opts, port=2525)
    other = changed(req, target=parse_target("[192.0.2.1]"))
    assert other == replace(req, target=parse_target("[192.0.2.1]")) and other.port == 2525
    with pytest.raises(TypeError, match="no field"):
        changed(opts, deadlin=1.0)
