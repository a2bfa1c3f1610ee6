"""Find SMTP replies in text: bare codes, reply lines, bounces, MTA log lines, DSNs, swaks.

Everything here is pure and total: any string gives a `Reply` or `None`, never an exception.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import replace

from probe.model import EnhancedCode, Form, NotAReply, Reply

MAX_ITEM = 16 * 1024
# Every pattern here runs in time linear in its input, whatever the input (tests/test_linear.py
# feeds each one long adversarial strings): no two quantifiers can share the same characters,
# runs of whitespace are taken possessively, and a gap between two literals stops where the
# next start would be. Digits are ASCII ([0-9], never \d, which takes any Unicode digit), so
# int() only ever sees ASCII digits.
_ENH = r"[245]\.[0-9]{1,3}\.[0-9]{1,3}"
_BARE_CODE = re.compile(r"\s*+([0-9]{1,3})\s*+")
_BARE_ENH = re.compile(rf"\s*+({_ENH})\s*+")
# A reply line: three digits, then "-", a space, or the end (RFC 5321 §4.2).
_LINE = re.compile(r"([0-9]{3})(?:([ -])(.*))?", re.DOTALL)
_LEAD_ENH = re.compile(rf"({_ENH})(?=\s|$|[,;:.)\]])\s*+")
# qmail and others append the enhanced code at the end: "(#5.1.1)" or "(#5.1.1 - chkuser)".
# Only the first "(#<code>" is tried (the atomic group keeps it): if no ")" follows it, none
# follows a later one either, and a line of unclosed "(#5.1.1" is read once, not once each.
_TRAIL_ENH = re.compile(rf"\A(?>.*?\(#({_ENH})\b)[^)]*+\)", re.DOTALL)
_SWAKS = re.compile(r"\s*+<(?:\*\*|~\*\*|~|-)\s*+(.*)", re.DOTALL)
_SWAKS_CMD = re.compile(r"\s*+(?:->|~>)\s*+(.*)", re.DOTALL)
_SWAKS_CONNECT = re.compile(r"\s*+===\s*+Connected to", re.IGNORECASE)
# Postfix's "said: <reply> (in reply to <command> command)": the parts are found one after the
# other (see _said), each once.
_SAID = re.compile(r"\bsaid:\s*+", re.IGNORECASE)
_IN_REPLY = re.compile(r"\(in reply to ", re.IGNORECASE)
_IN_REPLY_END = re.compile(r"(.+?)(?: command)?\)\Z", re.IGNORECASE | re.DOTALL)
_POSTFIX_REFUSED = re.compile(r"\brefused to talk to me:\s*+(.*)$", re.IGNORECASE | re.DOTALL)
_POSTFIX_REJECT = re.compile(
    r"\b(?:NOQUEUE|[0-9A-F]{6,}|[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-z]{10,}):\s*+"
    r"(?:reject|defer|discard|hold|filter|redirect|reject_warning)\w*:\s*+"
    r"([A-Z-]+)\s++from\s++\S+?:\s*+(.*?)(?:;\s*+from=<.*)?$",
    re.DOTALL,
)
# Exim's "SMTP error from remote mail server after <command>: [host <name> [<ip>]: ]<reply>",
# read from its first start (a later start cannot match where the first did not). The command
# starts after the spaces; only when nothing after them fits does the last space stand for it,
# as the backtracking `\s+(.+?)` this replaces would have tried.
_EXIM = re.compile(r"SMTP error from remote (?:mail server|mailer) after(?=\s)", re.IGNORECASE)
_EXIM_REST = re.compile(
    r"(?:\s++|\s+(?=\s:))(.+?):\s*+(?:host\s++\S++\s++\[[^\][]*+\]:\s*+)?([0-9]{3}.*)$",
    re.IGNORECASE | re.DOTALL,
)
_DIAG = re.compile(r"\bDiagnostic-Code:\s*+[\w-]++\s*+;\s*+(.*)$", re.IGNORECASE | re.DOTALL)
_STATUS = re.compile(rf"\b(?:Status:\s*+|dsn=)({_ENH})\b", re.IGNORECASE)
# Anywhere in a line: a basic code followed by an enhanced code is a strong enough signal.
_CODE_ENH = re.compile(rf"([2-5](?<![\w.:/-].)[0-9][0-9])[ -]({_ENH})(?=\s|$|[,;:.)\]])")
_REPLY_AFTER = re.compile(
    r"(?:^|[:;]\s++|\breply[=:]\s*+|\bstat=\w++:\s*+)([2-5][0-9][0-9])([ -]).+", re.I
)
# What every reply found past a swaks prefix contains: a code of 200-599 not preceded by a
# letter, digit, ".", "/" or "-" (as in host-192-0-250-1) and followed by whitespace, "-",
# the end, or what ends the reply in a Postfix line ("(in reply to", "; from=<"); or an
# enhanced code after the start, whitespace, ":", "=", "#" or ";" (not inside [192.0.2.1]).
# One scan rules out the lines of a log that hold no reply (most of them) before the forms
# are tried one by one (tests/test_linear.py checks that it never hides a reply).
_MAYBE = re.compile(
    r"[2-5](?:(?<![\w./-].)[0-9][0-9](?:[\s(;-]|$)|(?<=[245])(?<![^\s:=#;].)\.[0-9]{1,3}\.[0-9])"
)

_COMMANDS = (
    ("RCPT", ("RCPT",)),
    ("MAIL", ("MAIL",)),
    ("DOT", ("END OF DATA", "END-OF-DATA", "END-OF-MESSAGE", "END OF MESSAGE", ".")),
    ("DATA", ("DATA",)),
    ("EHLO", ("EHLO",)),
    ("HELO", ("HELO",)),
    ("STARTTLS", ("STARTTLS",)),
    ("AUTH", ("AUTH",)),
    ("BDAT", ("BDAT",)),
    ("RSET", ("RSET",)),
    ("QUIT", ("QUIT",)),
    ("VRFY", ("VRFY",)),
    ("EXPN", ("EXPN",)),
    ("NOOP", ("NOOP",)),
    ("ETRN", ("ETRN",)),
    ("CONNECT", ("CONNECT", "INITIAL CONNECTION", "GREETING", "INITIAL PROTOCOL GREETING")),
)


def command_name(words: str) -> str | None:
    """Map how logs name a command ("RCPT TO:<x>", "end of data", "CONNECT") to our vocabulary."""
    w = words.strip().upper()
    w = w.removeprefix("PIPELINED ").removeprefix("SENDING ")
    for name, starts in _COMMANDS:
        for start in starts:
            if w == start or w.startswith((start + " ", start + ":")):
                return name
    if w.startswith("END OF") or w.endswith("DATA COMMAND"):
        return "DOT"
    return None


def _enhanced(s: str) -> EnhancedCode:
    klass, subject, detail = s.split(".")  # ASCII digits: matched by _ENH
    return EnhancedCode(int(klass), int(subject), int(detail))


def _strip_lead_enhanced(text: str) -> tuple[EnhancedCode | None, str]:
    m = _LEAD_ENH.match(text)
    if m:
        return _enhanced(m.group(1)), text[m.end() :]
    return None, text


def _unfold(code: int, text: str, enh: EnhancedCode | None) -> tuple[str, bool]:
    """Remove repeated "550-5.1.1 " continuation prefixes that bounces fold into one line."""
    if f"{code}-" not in text and (enh is None or f"{code} {enh}" not in text):
        return text, False  # nothing the pattern below could find
    enh_pat = rf"(?:{re.escape(str(enh))}\s+)?" if enh else ""
    pat = re.compile(
        rf"(?:^|\s)(?:{code}-{enh_pat}|{code} {re.escape(str(enh))}\s+)"
        if enh
        else rf"(?:^|\s){code}-"
    )
    out, n = pat.subn(" ", text)
    return " ".join(out.split()), n > 0


def _from_lines(lines: list[str], form: Form, command: str | None) -> Reply | None:
    """Build a reply from one or more physical reply lines ("250-a", "250 b")."""
    if len(lines) == 1:
        return _from_line(lines[0], form, command)
    code: int | None = None
    enh: EnhancedCode | None = None
    texts: list[str] = []
    others: list[int] = []
    for line in lines:
        m = _LINE.fullmatch(line.strip())
        if not m:
            return None
        c = int(m.group(1))
        code = c if code is None else code
        if c != code and c not in others:
            others.append(c)
        rest = (m.group(3) or "").strip()
        e, rest = _strip_lead_enhanced(rest)
        if e is not None and enh is None:
            enh = e
        if rest:
            texts.append(rest)
    if code is None or not 200 <= code <= 599:
        return None
    text = " ".join(texts)
    if enh is None:
        m = _TRAIL_ENH.search(text)
        if m:
            enh = _enhanced(m.group(1))
    return Reply(code, enh, " ".join(text.split()), tuple(lines), form, command, tuple(others))


def _from_line(line: str, form: Form, command: str | None) -> Reply | None:
    """A reply from one physical line; bounces fold several into one ("550-5.1.1 a 550 b")."""
    m = _LINE.fullmatch(line.strip())
    if not m:
        return None
    code = int(m.group(1))
    if not 200 <= code <= 599:
        return None
    enh, text = _strip_lead_enhanced((m.group(3) or "").strip())
    text, folded = _unfold(code, text, enh)
    if folded and form is Form.REPLY:
        form = Form.FOLDED
    if enh is None and (m := _TRAIL_ENH.search(text)):
        enh = _enhanced(m.group(1))
    return Reply(code, enh, " ".join(text.split()), (line,), form, command)


def _reply_text(s: str, form: Form, command: str | None) -> Reply | None:
    """Parse text that should start with a reply (possibly several physical lines)."""
    if "\n" not in s and "\r" not in s:  # most replies in a log: one line
        return _from_line(s, form, command) if s.strip() else None
    lines = [ln for ln in s.replace("\r\n", "\n").replace("\r", "\n").split("\n") if ln.strip()]
    if not lines:
        return None
    if len(lines) > 1:
        r = _from_lines(lines, Form.MULTILINE if form is Form.REPLY else form, command)
        if r is not None:
            return r
        lines = [" ".join(ln.strip() for ln in lines)]
    return _from_lines(lines, form, command)


def reply_from_lines(lines: Iterable[str], command: str | None = None) -> Reply | None:
    """A reply from the physical lines of one server reply, as captured on the wire."""
    ls = [ln for ln in lines if ln.strip()]
    if not ls:
        return None
    return _from_lines(ls, Form.MULTILINE if len(ls) > 1 else Form.REPLY, command)


def parse(item: str) -> Reply | None:
    """Find the SMTP reply in one input item, or return None when it holds none."""
    # Replies are short (RFC 5321 §4.5.3.1.5: 512 octets a line); past this, matching stops.
    s = item[:MAX_ITEM].strip()
    if not s:
        return None
    if s[0] in _OPENERS:  # a code, a reply or a swaks line: each starts with one of these
        m = _BARE_CODE.fullmatch(s)
        if m:
            code = int(m.group(1))
            if 200 <= code <= 599 and len(m.group(1)) == 3:
                return Reply(code, None, "", (), Form.CODE)
            return None
        m = _BARE_ENH.fullmatch(s)
        if m:
            return Reply(None, _enhanced(m.group(1)), "", (), Form.ENHANCED)
        if _LINE.match(s) and (len(s) == 3 or s[3] in " -"):
            return _reply_text(s, Form.REPLY, None)
        m = _SWAKS.match(s)
        if m:
            return _reply_text(m.group(1), Form.SWAKS, None)
    if not _MAYBE.search(s):
        return None  # no form below can find a reply here (most lines of a log)
    return _embedded(s)


_OPENERS = frozenset("0123456789<")


def _embedded(s: str) -> Reply | None:
    """The reply inside an MTA log line, a bounce or a DSN."""
    # A word a case-insensitive pattern needs is first looked for with `in`, far quicker than
    # the search and as exact for ASCII text; beyond ASCII, re folds more characters than
    # lower() does ("ſ" is an "s"), so there every search is made.
    low: str | _Unknown = s.lower() if s.isascii() else _Unknown()
    if "smtp error from remote" in low and (m := _EXIM.search(s)):
        rest = _EXIM_REST.match(s, m.end())
        if rest:
            return _reply_text(rest.group(2), Form.EXIM, command_name(rest.group(1)))
    found = _postfix(s, low) or _diagnostic(s, low)
    if found is not None:
        return found
    return _anywhere(s, low)


class _Unknown:
    """The lower case of text beyond ASCII, as far as `in` can tell: it may hold any word."""

    __slots__ = ()

    def __contains__(self, word: str) -> bool:
        return True


def _postfix(s: str, low: str | _Unknown) -> Reply | None:
    # These forms can match lines they do not fit; None lets the caller try the others.
    if "refused to talk to me:" in low and (m := _POSTFIX_REFUSED.search(s)):
        r = _reply_text(m.group(1), Form.POSTFIX, "CONNECT")
        if r is not None:
            return r
    r = _said(s) if "said:" in low else None
    if r is not None:
        return r
    # Case-sensitive: its words can be looked for in the text itself, whatever it holds.
    acts = "reject" in s or "defer" in s or "hold" in s or "filter" in s or "redirect" in s
    if (acts or "discard" in s) and (m := _POSTFIX_REJECT.search(s)):
        return _reply_text(m.group(2), Form.POSTFIX, command_name(m.group(1)))
    return None


def _said(s: str) -> Reply | None:
    """Postfix's "said: <reply>", with the command of "(in reply to <command> command)"."""
    m = _SAID.search(s)
    if m is None:
        return None
    body, cmd = s[m.end() :].rstrip(), None
    # The command comes at the very end: without a ")" there, no "(in reply to" can be it.
    start = _IN_REPLY.search(body) if body.endswith(")") else None
    end = _IN_REPLY_END.match(body, start.end()) if start else None
    if start and end:
        body, cmd = body[: start.start()].rstrip(), command_name(end.group(1))
    return _reply_text(body, Form.POSTFIX, cmd)


def _diagnostic(s: str, low: str | _Unknown) -> Reply | None:
    """A DSN's Diagnostic-Code: a whole reply, or at least its enhanced code."""
    m = _DIAG.search(s) if "diagnostic-code:" in low else None
    if not m:
        return None
    r = _reply_text(m.group(1), Form.DSN, None)
    if r is not None:
        return r
    diag = m.group(1).strip()
    e = _LEAD_ENH.match(diag)
    return Reply(None, _enhanced(e.group(1)), diag, (), Form.DSN) if e else None


def _anywhere(s: str, low: str | _Unknown) -> Reply | None:
    """Weaker signs of a reply anywhere in the line, strongest first."""
    m = _CODE_ENH.search(s)
    if m:
        return _reply_text(s[m.start() :], Form.LOG, None)
    m = _REPLY_AFTER.search(s)
    if m:
        return _reply_text(s[m.start(1) :], Form.LOG, None)
    m = _STATUS.search(s) if "status:" in low or "dsn=" in low else None
    if m:
        return Reply(None, _enhanced(m.group(1)), "", (), Form.DSN)
    m = _TRAIL_ENH.search(s) if "(#" in s else None
    if m:
        return Reply(None, _enhanced(m.group(1)), s, (), Form.LOG)
    return None


_CONT = re.compile(r"\s*+(?:<(?:\*\*|~\*\*|~|-)\s*+)?([0-9]{3})-")
_LAST = re.compile(r"\s*+(?:<(?:\*\*|~\*\*|~|-)\s*+)?([0-9]{3})(?: |$)")
# A reply grouped from a stream holds at most what the wire would take of one (probe/wire.py):
# a log of endless "250-" lines comes out as replies of this size, not as one.
MAX_REPLY_LINES = 1000
MAX_REPLY_CHARS = 32 * 1024


def iter_replies(lines: Iterable[str]) -> Iterator[tuple[str, Reply | NotAReply]]:
    """Group a stream of lines into replies.

    Multi-line replies ("250-a" ... "250 b", also inside a swaks transcript) become one reply;
    a swaks "-> RCPT TO:<x>" line names the command for the reply that follows it.
    Yields (input, result) pairs lazily, so memory stays constant.
    """
    for text, found in scan(lines):
        yield text, (found if found is not None else NotAReply(text))


def scan(lines: Iterable[str]) -> Iterator[tuple[str, Reply | None]]:
    """`iter_replies`, with None where no reply was found (cheaper for a caller that skips
    those lines)."""
    group = _Group()
    for raw_line in lines:
        line = raw_line.rstrip("\r\n")
        first = line[:1]
        if first in _MARKS or first.isspace():
            yield from group.marked(line)
            continue
        # A line as a log writes them (most lines): it cannot continue a reply.
        if group.pending:
            yield group.flush()
        yield line, group.found(line)
    if group.pending:
        yield group.flush()


# How the lines that a reply is grouped from, or that a swaks transcript marks, can start.
_MARKS = frozenset("0123456789<-~=")


class _Group:
    """The continuation lines read so far of one multi-line reply, and the command a swaks
    transcript named for the next reply."""

    __slots__ = ("code", "command", "pending", "size")

    def __init__(self) -> None:
        self.pending: list[str] = []
        self.code = ""
        self.size = 0
        self.command: str | None = None

    def marked(self, line: str) -> Iterator[tuple[str, Reply | None]]:
        """A line that may continue or end a reply, or be a swaks mark."""
        cont = _CONT.match(line)
        if cont and (not self.pending or cont.group(1) == self.code):
            full = self.size + len(line) > MAX_REPLY_CHARS
            if self.pending and (full or len(self.pending) >= MAX_REPLY_LINES):
                yield self.flush()
            self.pending.append(line)
            self.code, self.size = cont.group(1), self.size + len(line) + 1
            return
        if self.pending:
            last = _LAST.match(line)
            if last and last.group(1) == self.code:
                self.pending.append(line)
                yield self.flush()
                return
            yield self.flush()
        cmd = _SWAKS_CMD.match(line)
        if cmd or _SWAKS_CONNECT.match(line):
            self.command = command_name(cmd.group(1)) if cmd else "CONNECT"
            yield line, None
            return
        yield line, self.found(line)

    def found(self, line: str) -> Reply | None:
        """The reply in a line by itself, with the command a swaks transcript named for it."""
        r = parse(line)
        if r is not None:
            if r.command is None and self.command is not None:
                r = replace(r, command=self.command)
            self.command = None
        return r

    def flush(self) -> tuple[str, Reply | None]:
        raw = "\n".join(self.pending)
        swaks = any(_SWAKS.match(p) for p in self.pending)
        body = "\n".join(m.group(1) if (m := _SWAKS.match(p)) else p for p in self.pending)
        r = _reply_text(body, Form.SWAKS if swaks else Form.MULTILINE, self.command)
        self.command, self.pending, self.size = None, [], 0
        return raw, r
