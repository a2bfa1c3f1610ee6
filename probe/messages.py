"""Sentences as data: an id and its parameters, put into words in the reader's language.

A `Message` is the English text of a sentence (so every field typed `str` takes one, and the
JSON keeps its English `detail` and `reason`) that also knows its id and parameters: a text
renderer says it again in the user's language (`say`), and the JSON carries the id and the
parameters beside the English (`message_json`). The texts are `locales/<lang>/messages.toml`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Union

from probe.catalog import Locale, locale

# A parameter is a value, or a message of its own (a step error inside a verdict reason).
Param = Union[str, int, float, "Message"]
Params = tuple[tuple[str, Param], ...]


class Message(str):
    """English text that remembers its message id and parameters.

    A subclass of `str`, not a record beside the text: the result model, the JSON and every
    test that reads English stay as they are, and a renderer asks `say` for its language.
    """

    id: str
    params: Params

    def __new__(cls, id: str, params: Params, text: str) -> Message:
        self = super().__new__(cls, text)
        object.__setattr__(self, "id", id)
        object.__setattr__(self, "params", params)
        return self

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"a Message cannot be changed ({name})")

    def __getnewargs__(self) -> tuple[str, Params, str]:  # type: ignore[override]
        # Results cross to and from batch worker processes by pickle.
        return (self.id, self.params, str(self))

    def kwargs(self) -> dict[str, Param]:
        return dict(self.params)


def render(loc: Locale, id: str, params: Params) -> str:
    """The text of message `id` in `loc`'s language (English where it has none)."""
    template = loc.message(id)
    if template is None:
        return id
    values = {k: say(loc, v) if isinstance(v, Message) else v for k, v in params}
    return template.format(**values)


def msg(id: str, /, **params: Param) -> Message:
    """The message `id` with its parameters; its text is the English one."""
    p = tuple(params.items())
    return Message(id, p, render(locale("en"), id, p))


def say(loc: Locale, text: str) -> str:
    """`text` in `loc`'s language: a message is rendered again; any other text is as it is."""
    if not isinstance(text, Message) or loc.lang == "en":
        return str(text)
    return render(loc, text.id, text.params)


def carried(e: BaseException) -> str:
    """The one-line reason an exception was raised with: a message stays a message (to be
    said in the reader's language), anything else is its text."""
    first = e.args[0] if len(e.args) == 1 else None
    return first if isinstance(first, str) else str(e)


# The name for modules that have a `say` of their own (the CLI's stderr writer).
said_in = say


def say_or(loc: Locale, text: str | None, default: str) -> str:
    return default if text is None else say(loc, text)


def message_json(text: str | None) -> dict[str, object] | None:
    """The id and parameters of a message, for the JSON beside its English text; None for
    text that is no message (server text, a library's own words)."""
    if not isinstance(text, Message):
        return None
    params: dict[str, object] = {}
    for k, v in text.params:
        params[k] = message_json(v) if isinstance(v, Message) else v
    return {"id": text.id, "params": params}


def from_json(text: object, doc: object) -> str:
    """The message that `message_json` wrote as `doc` (renderers of JSON documents say it
    again in their language); the plain `text` when there is none."""
    found = _load(doc)
    if found is not None:
        return found
    return "" if text is None else str(text)


def _load(doc: object) -> Message | None:
    if not isinstance(doc, Mapping) or not isinstance(doc.get("id"), str):
        return None
    params: list[tuple[str, Param]] = []
    raw = doc.get("params")
    for k, v in raw.items() if isinstance(raw, Mapping) else ():
        value = _load(v) if isinstance(v, Mapping) else v
        if isinstance(value, str | int | float):
            params.append((str(k), value))
    p = tuple(params)
    return Message(doc["id"], p, render(locale("en"), doc["id"], p))


def said(loc: Locale, doc: Mapping[str, object], key: str = "detail", mkey: str = "message") -> str:
    """The text `doc[key]` of a JSON document in `loc`'s language, by its id in `doc[mkey]`."""
    return say(loc, from_json(doc.get(key), doc.get(mkey)))
