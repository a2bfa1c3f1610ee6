"""Small pure helpers for showing untrusted text and choosing a language."""

from __future__ import annotations

import re
from collections.abc import Mapping

from probe.catalog import LANGUAGES


def _re(pattern: str, flags: int = 0) -> re.Pattern[str]:
    """A pattern compiled when first used: a command that needs none does not pay for it
    (re keeps what it compiled, so later calls find it)."""
    return re.compile(pattern, flags)


# What a terminal or a viewer would act on or hide rather than show: C0, DEL, C1 (NEL among
# them), soft hyphen, the Arabic letter mark and every other bidi control, zero-width and
# invisible format characters, line/paragraph separators, BOM, interlinear annotation marks,
# tag characters (which can smuggle invisible text), and lone surrogates (undecodable bytes
# kept by surrogateescape).
_UNSAFE_ABOVE_C0 = (
    "\x7f-\x9f\xad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f"
    "\ufeff\ufff9-\ufffb\ud800-\udfff\U000e0000-\U000e007f"
)
_UNSAFE = f"[\x00-\x1f{_UNSAFE_ABOVE_C0}]"
# json.dumps escapes C0 inside strings itself; outside them C0 is only its own indentation.
_JSON_UNSAFE = f"[{_UNSAFE_ABOVE_C0}]"
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r", "\x1b": "\\x1b"}


def u_escape(ch: str) -> str:
    """`ch` as JSON writes it escaped: \\uXXXX, a surrogate pair above U+FFFF."""
    cp = ord(ch)
    if cp > 0xFFFF:  # JSON has only four-digit escapes: a surrogate pair
        cp -= 0x10000
        return f"\\u{0xD800 + (cp >> 10):04x}\\u{0xDC00 + (cp & 0x3FF):04x}"
    return f"\\u{cp:04x}"


def _json_escape(m: re.Match[str]) -> str:
    return u_escape(m.group(0))


# The UTF-8 forms of the characters _JSON_UNSAFE names (lone surrogates aside: orjson refuses
# them). Searched for in what is left once ASCII below DEL is deleted: a multi-byte sequence
# holds no ASCII byte, so each stays whole, and the regex scans a few bytes instead of a
# 10 KB batch record.
_UTF8_UNSAFE = (
    rb"\x7f|\xc2[\x80-\x9f\xad]|\xd8\x9c|\xe1\xa0\x8e|\xe2\x80[\x8b-\x8f\xa8-\xae]"
    rb"|\xe2\x81[\xa0-\xaf]|\xef\xbb\xbf|\xef\xbf[\xb9-\xbb]|\xf3\xa0[\x80\x81]"
)


_ASCII_BELOW_DEL = bytes(range(0x7F))


def utf8_unsafe(data: bytes) -> bool:
    """Whether UTF-8 `data` holds a character that `to_json` escapes (DEL and above)."""
    if data.isascii():  # (a word at a time: most of a record outside its kept replies)
        return data.find(b"\x7f") >= 0  # (not `in`: see probe.wire's data_received)
    rest = data.translate(None, _ASCII_BELOW_DEL)
    return bool(rest) and re.compile(_UTF8_UNSAFE).search(rest) is not None


class Encoded(dict[str, object]):
    """A JSON object that keeps its own encoding (safe, as `to_json_bytes` makes it).

    A batch writes a provider's greeting and 250s into every record: copying their bytes is
    cheaper than encoding the same objects again. Never changed once made: the bytes would
    no longer say what the object holds."""

    __slots__ = ("encoded", "fragment")
    encoded: bytes  # what to_json_bytes makes of the plain object
    fragment: object  # an orjson.Fragment of it; None when orjson did not make those bytes

    def __init__(self, obj: dict[str, object]) -> None:
        super().__init__(obj)
        data = _orjson(obj, None)
        if data is None:
            # What orjson refuses (lone surrogates, say) json makes, with spaced separators:
            # not copied in, so such a record is made by json whole.
            self.encoded, self.fragment = _escaped(obj, None, None).encode(), None
            return
        import orjson

        self.encoded = _escaped(obj, None, data).encode() if utf8_unsafe(data) else data
        self.fragment = orjson.Fragment(self.encoded)

    def __reduce__(self) -> tuple[type[dict[str, object]], tuple[dict[str, object]]]:
        # Pickled (a Ray actor's records, a copy) as the plain dict: a Fragment cannot be.
        return dict, (dict(self),)


def _orjson(obj: object, indent: int | None) -> bytes | None:
    try:
        import orjson  # a batch record encodes in a tenth of json's time
    except ImportError:
        return None
    if indent not in (None, 2):
        return None
    try:
        return orjson.dumps(obj, option=orjson.OPT_INDENT_2 if indent else 0)
    except TypeError:  # lone surrogates, integers past 64 bits
        return None


def _compact(obj: object, newline: bool) -> bytes | None:
    """Compact JSON that is safe as it is, each `Encoded` object copied in; None when
    something outside those needs escaping (or orjson cannot encode it)."""
    try:
        import orjson
    except ImportError:
        return None
    kept = orjson.OPT_PASSTHROUGH_SUBCLASS  # Encoded (a dict subclass) reaches `default`
    try:
        # Only what is not encoded yet is looked at: the kept bytes are safe already.
        if utf8_unsafe(orjson.dumps(obj, default=_skeleton, option=kept)):
            return None
        # The newline by orjson, not by `+`: that would copy a 10 KB record once more.
        end = orjson.OPT_APPEND_NEWLINE if newline else 0
        return orjson.dumps(obj, default=_whole, option=kept | end)
    except TypeError:
        return None


def _skeleton(o: object) -> object:
    return 0 if type(o) is Encoded and o.fragment is not None else _plain(o)


def _whole(o: object) -> object:
    return o.fragment if type(o) is Encoded and o.fragment is not None else _plain(o)


def _plain(o: object) -> object:
    """A subclass of a JSON type (a Message is a str) as that type, by its stored value as
    orjson reads it (not by methods a subclass may override)."""
    if isinstance(o, str):
        return str.__str__(o)
    if isinstance(o, int):
        return int.__int__(o)
    if isinstance(o, dict):
        return dict(dict.items(o))
    if isinstance(o, list):
        return list.copy(o)
    raise TypeError(type(o).__name__)


def to_json(obj: object, indent: int | None = None) -> str:
    """JSON text that is safe to print and to paste into JavaScript: every character `safe`
    would escape appears as a \\u escape (json.dumps leaves C1, DEL, U+2028/2029 and bidi
    controls raw), so the parsed value is unchanged."""
    data = _orjson(obj, indent)
    if data is not None and not utf8_unsafe(data):  # most records: nothing to escape
        return data.decode()
    return _escaped(obj, indent, data)


def to_json_bytes(obj: object, indent: int | None = None, *, newline: bool = False) -> bytes:
    """`to_json` in UTF-8, for a file: most records are written as orjson made them,
    never decoded to text and encoded back. With `newline`, a line of JSON Lines."""
    if indent is None and (data := _compact(obj, newline)) is not None:
        return data
    end = b"\n" if newline else b""
    data = _orjson(obj, indent)
    if data is not None and not utf8_unsafe(data):
        return data + end
    return _escaped(obj, indent, data).encode() + end


def _escaped(obj: object, indent: int | None, data: bytes | None) -> str:
    if data is None:
        import json  # only without orjson: text output never loads it

        out = json.dumps(obj, ensure_ascii=False, indent=indent)
    else:
        out = data.decode()
    if out.isascii() and "\x7f" not in out:
        return out
    return _re(_JSON_UNSAFE).sub(_json_escape, out)


def _escape_one(m: re.Match[str]) -> str:
    ch = m.group(0)
    if ch in _NAMED:
        return _NAMED[ch]
    cp = ord(ch)
    if 0xDC80 <= cp <= 0xDCFF:  # surrogateescape stand-in for a raw byte
        return f"\\x{cp - 0xDC00:02x}"
    if cp <= 0xFF:
        return f"\\x{cp:02x}"
    return f"\\u{cp:04x}" if cp <= 0xFFFF else f"\\U{cp:08x}"


def safe(s: str) -> str:
    """Make text from outside safe for a terminal: every control character shown escaped."""
    if s.isprintable():  # everything _UNSAFE matches is not printable: most text has none
        return s
    return _re(_UNSAFE).sub(_escape_one, s)


def lang_from_env(env: Mapping[str, str]) -> str:
    """Pick a catalog language from LC_ALL, LC_MESSAGES or LANG; English otherwise."""
    for var in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = env.get(var, "")
        if value:
            return normalize_lang(value) or "en"
    return "en"


def normalize_lang(value: str) -> str | None:
    """ "zh_CN.UTF-8" -> "zh", "de-AT" -> "de"; None when not a catalog language."""
    head = _re(r"[_.@-]").split(value.strip().lower(), maxsplit=1)[0]
    return head if head in LANGUAGES else None


def human_wait(seconds: int) -> tuple[str, int]:
    """A duration as (unit, amount) with a unit a person would use."""
    if seconds < 120:
        return "seconds", seconds
    if seconds < 2 * 3600:
        return "minutes", round(seconds / 60)
    if seconds < 2 * 86400:
        return "hours", round(seconds / 3600)
    return "days", round(seconds / 86400)
