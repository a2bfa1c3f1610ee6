"""One escaper for every output: text shows each invisible or controlling character escaped,
JSON carries them as \\u escapes (parsed values unchanged)."""

from __future__ import annotations

import json
import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from probe.text import safe, to_json, to_json_bytes

C0 = [chr(c) for c in range(0x20)]
C1 = [chr(c) for c in range(0x80, 0xA0)]
BIDI = [
    "\u061c",
    "\u200e",
    "\u200f",
    *map(chr, range(0x202A, 0x202F)),
    *map(chr, range(0x2066, 0x206A)),
]
TAGS = [chr(c) for c in range(0xE0000, 0xE0080)]
SEPARATORS = ["\u2028", "\u2029"]
CLASSES = {
    "C0": C0,
    "DEL": ["\x7f"],
    "C1": C1,
    "bidi": BIDI,
    "tags": TAGS,
    "separators": SEPARATORS,
}
ALL = [ch for chars in CLASSES.values() for ch in chars]


def test_text_escapes_every_class() -> None:
    for name, chars in CLASSES.items():
        for ch in chars:
            shown = safe(f"a{ch}b")
            assert ch not in shown, (name, hex(ord(ch)))
            assert shown.startswith("a\\") and shown.endswith("b"), (name, shown)


def test_text_escapes_are_unambiguous() -> None:
    assert safe("\U000e0041") == "\\U000e0041"
    assert safe("\u202e") == "\\u202e"
    assert safe("\x1b[31m") == "\\x1b[31m"
    assert safe("\udcff") == "\\xff"  # a raw byte kept by surrogateescape


def test_json_escapes_c1_del_separators_and_bidi_but_keeps_the_value() -> None:
    for ch in [*C1, "\x7f", *SEPARATORS, *BIDI, *TAGS]:
        out = to_json({"reply": f"x{ch}y"})
        assert ch not in out, hex(ord(ch))
        assert json.loads(out) == {"reply": f"x{ch}y"}
    line = to_json({"reply": "\u2028"})
    assert "\\u2028" in line and len(line.splitlines()) == 1


def test_json_indentation_is_not_escaped() -> None:
    out = to_json({"a": [1, "\x85"]}, indent=2)
    assert out == '{\n  "a": [\n    1,\n    "\\u0085"\n  ]\n}'


def test_readable_text_is_left_alone() -> None:
    for s in ("550 5.1.1 user unknown", "中文 回复", "Empfänger unbekannt", "수신자 없음"):
        assert safe(s) == s
        assert to_json(s) == f'"{s}"'


@given(st.text())
def test_no_output_carries_a_raw_unsafe_character(s: str) -> None:
    shown = safe(s)
    assert not any(ch in shown for ch in ALL)
    assert not any(unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp") for ch in shown)
    out = to_json(s)
    assert not any(ch in out for ch in ALL)
    assert json.loads(out) == s
    # What batch writes to a file: the same text, in UTF-8.
    assert to_json_bytes(s) == out.encode()


def test_json_of_what_the_fast_encoder_refuses_is_still_json() -> None:
    # A raw byte kept by surrogateescape, and an integer past 64 bits.
    for value in ({"reply": "\udcff"}, {"n": 2**70}):
        assert json.loads(to_json(value)) == value
        assert to_json_bytes(value) == to_json(value).encode()
    assert "\\udcff" in to_json("\udcff")


def test_the_utf8_check_finds_every_character_json_escapes() -> None:
    # The fast path of to_json decides on the encoded bytes; a character it missed would go
    # out raw. Walk every code point (surrogates cannot be encoded).
    from probe.text import utf8_unsafe

    missed = [
        hex(cp)
        for cp in range(0x7F, 0x110000)
        if not 0xD800 <= cp <= 0xDFFF
        and safe(chr(cp)) != chr(cp)  # what the terminal escaper treats as unsafe
        and not utf8_unsafe(f"a{chr(cp)}b".encode())
    ]
    assert missed == []
    assert to_json("x\u202ey") == '"x\\u202ey"'
    assert not utf8_unsafe("§ é 中 한 ü".encode())
    assert utf8_unsafe("x\u202ey".encode())


ANY_TEXT = st.text(st.characters(exclude_categories=()))  # lone surrogates too


@given(ANY_TEXT, ANY_TEXT, ANY_TEXT)
def test_a_kept_encoding_gives_the_bytes_of_the_plain_object(a: str, b: str, c: str) -> None:
    # A batch copies each rendered reply's kept bytes into its records: a record must come
    # out byte for byte as it would with plain dicts, escapes included, wherever the unsafe
    # character is (inside the kept object, beside it, or in a Message beside it).
    from probe.messages import Message
    from probe.text import Encoded

    inner = {"lines": [a], "text": b}
    doc = {"reply": Encoded(inner), "others": [Encoded(inner)], "reason": Message("x", {}, c)}
    plain = {"reply": inner, "others": [inner], "reason": c}
    assert to_json_bytes(doc) == to_json_bytes(plain) == to_json(plain).encode()
    assert json.loads(to_json_bytes(doc)) == plain
    assert to_json(doc, indent=2) == to_json(plain, indent=2)


def test_a_kept_encoding_is_made_once_and_then_copied() -> None:
    from probe.text import Encoded

    kept = Encoded({"a": "x\u202ey"})
    assert kept.encoded == b'{"a":"x\\u202ey"}'
    # The bytes made at the start are what goes out: the object is not encoded again.
    kept["a"] = "changed"
    assert to_json_bytes({"r": kept}) == b'{"r":{"a":"x\\u202ey"}}'


def test_a_kept_encoding_travels_as_its_plain_object() -> None:
    # Ray sends an actor's records to the driver by pickle; copies go the same way.
    import copy
    import pickle

    from probe.text import Encoded

    kept = Encoded({"a": ["x"], "b": 1})
    for other in (pickle.loads(pickle.dumps({"r": kept}))["r"], copy.deepcopy(kept)):
        assert type(other) is dict and other == {"a": ["x"], "b": 1}
