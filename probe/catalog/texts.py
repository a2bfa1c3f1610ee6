"""The catalog's human texts: one `Locale` per language, each file read when first needed."""

from __future__ import annotations

from functools import cache
from typing import Any

from probe.catalog.files import load_toml

LANGUAGES: tuple[str, ...] = ("en", "zh", "de", "ko")
SECTIONS: tuple[str, ...] = ("ui", "basic", "enhanced", "rules", "findings", "messages", "help")


@cache
def _section(lang: str, name: str) -> dict[str, Any]:
    # One file of one language: `explain 550` reads ui and basic, not the other 18 locale files.
    if name not in SECTIONS:
        raise KeyError(name)
    return load_toml("locales", lang, f"{name}.toml")


class _Sections(dict[str, dict[str, Any]]):
    """The sections of one language read so far; one not yet read is read when asked for.

    A plain dict lookup for the renderers, which ask for a dozen texts per reply.
    """

    __slots__ = ("lang",)

    def __init__(self, lang: str) -> None:
        super().__init__()
        self.lang = lang

    def __missing__(self, name: str) -> dict[str, Any]:
        data = self[name] = _section(self.lang, name)
        return data


class Locale:
    """Texts of one language, with English behind it for anything missing."""

    def __init__(self, lang: str) -> None:
        self.lang = lang if lang in LANGUAGES else "en"
        self._data = _Sections(self.lang)
        self._fallback: Locale | None = None if self.lang == "en" else locale("en")

    def section(self, name: str) -> dict[str, Any]:
        return self._data[name]

    def entry(self, section: str, key: str) -> dict[str, Any] | None:
        """The texts of one entry: a basic code, an enhanced key ("1.1"), or a rule id."""
        data = self._data[section]
        if section == "enhanced":
            data = data.get("code", {})
        found = data.get(key)
        if found is None and self._fallback is not None:
            return self._fallback.entry(section, key)
        return found

    def field(self, section: str, key: str, name: str) -> str | None:
        e = self.entry(section, key)
        if e is None:
            return None
        value = e.get(name)
        if value is None and self._fallback is not None:
            return self._fallback.field(section, key, name)
        return value if isinstance(value, str) else None

    def ui(self, path: str, **kwargs: object) -> str:
        """A UI string by dotted path ("heading.fix"), formatted with kwargs."""
        node: Any = self._data["ui"]
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
            if node is None:
                break
        if not isinstance(node, str):
            if self._fallback is not None:
                return self._fallback.ui(path, **kwargs)
            return path
        return node.format(**kwargs) if kwargs else node

    def message(self, id: str) -> str | None:
        """The template of message `id` ("wire.timeout"; see probe.messages), or None."""
        node: Any = self._data["messages"]
        for part in id.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, str):
            return node
        return self._fallback.message(id) if self._fallback is not None else None

    def enhanced_part(self, part: str, key: str, name: str) -> str:
        """Title or description of an enhanced class ("class", "2") or subject ("subject", "1")."""
        node = self._data["enhanced"].get(part, {}).get(key, {})
        value = node.get(name)
        if not isinstance(value, str):
            return self._fallback.enhanced_part(part, key, name) if self._fallback else ""
        return value


@cache
def locale(lang: str) -> Locale:
    return Locale(lang)
