"""A help page in another language: click's layout, the catalog's words (`help.toml`, keyed
as the English file, whose texts are the code's), wrapped by display width (a CJK character
takes two cells). Loaded only when help is asked for in a language other than English."""

from __future__ import annotations

from typing import Any

import click

from probe.render import unspaced, width, wrap_cells


def _flat(node: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in node.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        elif isinstance(value, str):
            out[f"{prefix}{key}"] = value
    return out


def translations(lang: str) -> tuple[dict[str, str], dict[str, str]]:
    """Each English help text with its `lang` text, and click's own words in `lang`."""
    from probe.catalog import locale

    en = _flat(locale("en").section("help"))
    there = _flat(locale(lang).section("help"))
    said = {text: there.get(key, text) for key, text in en.items()}
    words = {
        key.removeprefix("click."): there.get(key, en[key])
        for key in en
        if key.startswith("click.")
    }
    return said, words


class HelpFormatter(click.HelpFormatter):
    """click's help layout with the words of one language, wrapped by display width."""

    def __init__(self, lang: str, width: int | None = None, max_width: int | None = None) -> None:
        super().__init__(width=width, max_width=max_width)
        self.said, self.words = translations(lang)

    def _say(self, text: str) -> str:
        return self.said.get(text, text)

    def write_usage(self, prog: str, args: str = "", prefix: str | None = None) -> None:
        usage = self.words["usage"]
        space = "" if usage and unspaced(usage[-1]) else " "  # (a full-width colon)
        head = f"{' ' * self.current_indent}{usage}{space}{prog} "
        lines = wrap_cells(args, max(self.width - width(head), 20)) or [""]
        self.write(head + lines[0] + "\n")
        for line in lines[1:]:
            self.write(" " * width(head) + line + "\n")

    def write_heading(self, heading: str) -> None:
        word = {"Options": "options", "Commands": "commands"}.get(heading)
        said = self.words[word] if word else heading
        colon = "：" if said and unspaced(said[-1]) else ":"
        self.write(f"{' ' * self.current_indent}{said}{colon}\n")

    def write_text(self, text: str) -> None:
        indent = " " * self.current_indent
        cols = max(self.width - self.current_indent, 11)
        for n, block in enumerate(_paragraphs(self._say(text))):
            if n:
                self.write("\n")
            if block.startswith("\b\n"):  # click's mark: these lines as they are
                self.write("".join(f"{indent}{line}\n" for line in block[2:].splitlines()))
                continue
            self.write("".join(f"{indent}{line}\n" for line in wrap_cells(block, cols)))

    def write_dl(self, rows: Any, col_max: int = 30, col_spacing: int = 2) -> None:
        rows = list(rows)
        first = min(max((width(term) for term, _ in rows), default=0), col_max) + col_spacing
        indent = " " * self.current_indent
        cols = max(self.width - first - self.current_indent, 10)
        for term, definition in rows:
            lines = wrap_cells(self._definition(definition), cols)
            if not lines:
                self.write(f"{indent}{term}\n")
                continue
            if width(term) <= first - col_spacing:
                self.write(f"{indent}{term}{' ' * (first - width(term))}{lines[0]}\n")
                lines = lines[1:]
            else:
                self.write(f"{indent}{term}\n")
            self.write("".join(f"{indent}{' ' * first}{line}\n" for line in lines))

    def _definition(self, text: str) -> str:
        """An option's help in this language, with click's `[default: ...]` and `[required]`."""
        if text == "Show this message and exit.":
            return self.words["show_help"]
        if text == "Show the version and exit.":
            return self.words["show_version"]
        help_, sep, extra = text.rpartition("  [")
        if not sep:
            help_, extra = ("", text[1:]) if text.startswith("[") else (text, "")
        if extra:
            word = self.words["default"]
            colon = "：" if unspaced(word[-1:]) else ": "
            extra = extra.replace("default: ", f"{word}{colon}", 1)
            extra = extra.replace("required]", f"{self.words['required']}]", 1)
            extra = "[" + extra
        return "  ".join(part for part in (self._say(help_), extra) if part)


def _paragraphs(text: str) -> list[str]:
    """Blank-line separated paragraphs; a paragraph opened by click's \\b mark keeps it."""
    out: list[str] = []
    for block in text.split("\n\n"):
        block = block.strip("\n")
        if not block:
            continue
        if block.startswith("\b"):
            out.append("\b\n" + block[1:].lstrip("\n"))
        else:
            out.append(_joined(block.split("\n")))
    return out


def _joined(lines: list[str]) -> str:
    """The lines of a paragraph as one: a space between them, except between two CJK
    characters (Chinese has none between words)."""
    text = ""
    for line in (line.strip() for line in lines):
        if not line:
            continue
        glue = "" if not text or (unspaced(text[-1]) and unspaced(line[0])) else " "
        text += glue + line
    return " ".join(text.split())
