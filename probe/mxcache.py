"""I/O: MX-level facts kept between runs (`batch --cache FILE`), in SQLite.

What a session learns without asking anything of a domain (greeting, EHLO extensions, TLS,
certificate) is the same for every domain that uses the MX host. The file keeps it per MX
name, address, port and session options, with the time it was learnt, so that the next run
reuses it up to `--max-age` instead of opening a session again.

Each fact is written in a transaction of its own: a run stopped at any moment (Ctrl-C,
SIGKILL, a full disk) leaves a file with every fact whole or absent. A file is used only
when it says it is one of ours (SQLite's application id and our schema version); anything
else is refused with `CacheFileError`, never guessed at.
"""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from probe.config import SessionOptions
from probe.context import wire_reply
from probe.messages import msg
from probe.result import Certificate, ErrorKind, Outcome, Session, Step, StepError, TlsInfo
from probe.wire import Raw

APPLICATION_ID = 0x534D5450  # "SMTP": what `PRAGMA application_id` reads in our files
VERSION = 1
DEFAULT_MAX_AGE = 86400.0  # a day: the pace of polite recurring scans
# The facts a whole cached session stands for, and those a kept connection carries over.
SESSION_FACTS = ("greeting", "extensions", "tls", "certificate", "steps")
CONNECTION_FACTS = ("greeting", "extensions", "tls", "certificate")


class CacheFileError(ValueError):
    """The --cache file cannot be used; the message is one line for the user."""


@dataclass(frozen=True, slots=True)
class Hit:
    """Where a session's facts came from: this run (`run`), the cache file (`file`), or a
    connection kept from an earlier target (`connection`); `age` in seconds."""

    source: str
    age: float

    def json(self) -> dict[str, object]:
        facts = CONNECTION_FACTS if self.source == "connection" else SESSION_FACTS
        return {"source": self.source, "facts": list(facts), "age_s": round(self.age, 1)}


def fact_key(host: str, address: str, port: int, opts: SessionOptions) -> str:
    """What makes two sessions learn the same facts: the server, and how we talk to it."""
    parts = [host.lower(), address, port, opts.helo, opts.mail_from, str(opts.starttls)]
    parts += [opts.implicit_tls, opts.cafile, str(opts.quit_after or "")]
    return json.dumps(parts, separators=(",", ":"))


def cacheable(s: Session) -> bool:
    """Only what a server answered in full: a timeout or a refusal is worth asking again next
    run, and a resumed TLS session carries no certificate to reuse."""
    return s.completed and not s.reused and not s.tls.resumed


# -- the file ----------------------------------------------------------------------------------


class MxStore:
    """One open cache file. Not shared between threads; each process opens its own."""

    def __init__(self, db: sqlite3.Connection, path: str) -> None:
        self._db, self.path = db, path

    @classmethod
    def open(cls, path: str) -> MxStore:
        """Open `path`, or create it when absent or empty; CacheFileError when it is not ours."""
        new = not os.path.exists(path) or (os.path.isfile(path) and os.path.getsize(path) == 0)
        if os.path.isdir(path):
            raise CacheFileError(msg("input.cache_dir", path=path))
        try:
            # isolation_level=None: transactions are ours (BEGIN IMMEDIATE), not the module's.
            db = sqlite3.connect(path, timeout=30.0, isolation_level=None)
        except sqlite3.Error as e:
            raise CacheFileError(msg("input.cache_open", path=path, why=str(e))) from None
        try:
            if new:
                _create(db)
            else:
                _check(db, path)
            db.execute("PRAGMA journal_mode=WAL")  # several workers may write at once
        except sqlite3.DatabaseError as e:
            db.close()
            raise CacheFileError(msg("input.cache_not_ours", path=path, why=str(e))) from None
        except CacheFileError:
            db.close()
            raise
        return cls(db, path)

    def get(
        self, key: str, max_age: float, now: float | None = None
    ) -> tuple[Session, float] | None:
        """The session kept for `key` and its age in seconds, if younger than `max_age`."""
        now = time.time() if now is None else now
        row = self._db.execute("SELECT stored, data FROM facts WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        stored, data = row
        age = now - float(stored)
        if age > max_age or age < -60:  # a clock set back by more than a minute: do not trust
            return None
        try:
            return decode(json.loads(data)), max(age, 0.0)
        except (ValueError, KeyError, TypeError, IndexError):
            return None  # an entry we cannot read is a miss; the next put replaces it

    def put(self, key: str, session: Session, now: float | None = None) -> None:
        now = time.time() if now is None else now
        data = json.dumps(encode(session), separators=(",", ":"))
        with _transaction(self._db):
            self._db.execute(
                "INSERT OR REPLACE INTO facts (key, stored, data) VALUES (?, ?, ?)",
                (key, now, data),
            )

    def count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM facts").fetchone()[0])

    def close(self) -> None:
        self._db.close()


class _transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, *_: object) -> None:
        self.db.execute("COMMIT" if kind is None else "ROLLBACK")


def _create(db: sqlite3.Connection) -> None:
    with _transaction(db):
        db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        db.execute(f"PRAGMA user_version = {VERSION}")
        db.execute(
            "CREATE TABLE IF NOT EXISTS facts (key TEXT PRIMARY KEY, stored REAL NOT NULL, "
            "data TEXT NOT NULL)"
        )


def _check(db: sqlite3.Connection, path: str) -> None:
    app = db.execute("PRAGMA application_id").fetchone()[0]
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if app != APPLICATION_ID:
        raise CacheFileError(msg("input.cache_foreign", path=path))
    if version != VERSION:
        raise CacheFileError(
            msg("input.cache_version", path=path, version=version, expected=VERSION)
        )
    check = db.execute("PRAGMA quick_check").fetchone()[0]
    if check != "ok":
        raise CacheFileError(msg("input.cache_damaged", path=path, why=str(check)))
    cols = [r[1] for r in db.execute("PRAGMA table_info(facts)")]
    if cols != ["key", "stored", "data"]:
        raise CacheFileError(msg("input.cache_no_table", path=path))


# -- sessions as JSON ----------------------------------------------------------------------------


def encode(s: Session) -> dict[str, Any]:
    return {
        "host": s.host,
        "address": s.address,
        "port": s.port,
        "helo": s.helo,
        "outcome": s.outcome.value,
        "extensions": [list(e) for e in s.extensions],
        "tls": _tls_out(s.tls),
        "steps": [_step_out(st) for st in s.steps],
    }


def decode(d: dict[str, Any]) -> Session:
    """The session `encode` wrote; ValueError, KeyError or TypeError when it is not that."""
    return Session(
        host=_str(d["host"]),
        address=_str(d["address"]),
        port=int(d["port"]),
        steps=tuple(_step_in(st) for st in d["steps"]),
        tls=_tls_in(d["tls"]),
        extensions=tuple((_str(k), _str(v)) for k, v in d["extensions"]),
        outcome=Outcome(d["outcome"]),
        helo=_str(d["helo"]),
    )


def _str(v: object) -> str:
    if not isinstance(v, str):
        raise TypeError("not a string")
    return v


def _opt(v: object) -> str | None:
    return None if v is None else _str(v)


def _step_out(st: Step) -> dict[str, Any]:
    reply = st.reply
    return {
        "command": st.command,
        "sent": st.sent,
        "code": reply.code if reply else None,
        "lines": list(reply.lines) if reply else None,
        "elapsed_ms": st.elapsed_ms,
        "error": [st.error.kind.value, st.error.detail] if st.error else None,
        "tls": st.tls,
        "note": st.note,
        "setup_ms": st.setup_ms,
    }


def _step_in(d: dict[str, Any]) -> Step:
    reply = None
    if d["code"] is not None:
        # Interpreted again, as the wire reply was: the catalog may have learnt since.
        data = "".join(f"{line}\r\n" for line in d["lines"]).encode("utf-8", "surrogateescape")
        code = int(d["code"])
        reply = wire_reply(Raw(code, "", data), _str(d["command"]))
    err = d["error"]
    error = StepError(ErrorKind(err[0]), _str(err[1])) if err is not None else None
    return Step(
        _str(d["command"]),
        _opt(d["sent"]),
        reply,
        float(d["elapsed_ms"]),
        error,
        bool(d["tls"]),
        _opt(d["note"]),
        _num(d.get("setup_ms")),
    )


def _num(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _tls_out(t: TlsInfo) -> dict[str, Any]:
    out = t._asdict()
    c = t.certificate
    if c is not None:
        out["certificate"] = {**c._asdict(), "sans": list(c.sans), "der": _b64(c.der)}
    out["chain"] = [_b64(der) for der in t.chain]  # DANE matches against it later
    return out


def _tls_in(d: dict[str, Any]) -> TlsInfo:
    c = d["certificate"]
    cert = None
    if c is not None:
        cert = Certificate(
            _str(c["subject"]),
            _str(c["issuer"]),
            tuple(_str(s) for s in c["sans"]),
            _str(c["not_before"]),
            _str(c["not_after"]),
            int(c["days_left"]),
            _str(c["sha256"]),
            base64.b64decode(_str(c["der"]), validate=True),
        )
    fields = {k: d[k] for k in TlsInfo._fields if k not in ("certificate", "chain")}
    chain = tuple(base64.b64decode(_str(der), validate=True) for der in d["chain"])
    return TlsInfo(**{**fields, "certificate": cert, "chain": chain})


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
