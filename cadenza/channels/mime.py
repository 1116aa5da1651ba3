"""Email bytes composed directly: headers that cannot be injected, MIME parts, encodings.

The standard library's `email` package builds a message in about a millisecond; the
dispatcher sends thousands per second, so messages are written here straight to bytes with
the same rules:

- Every header value is one line: CR, LF and every other line break or control character
  in data become a space, so no value can start a header of its own. A value
  that is not ASCII becomes RFC 2047 encoded words (UTF-8, base64), folded only with
  CRLF + space (a continuation, never a new header).
- Addresses are checked (a plain `local@domain`; a non-ASCII domain becomes IDNA) before
  they reach a header or an SMTP command; display names are quoted or encoded.
- Bodies are UTF-8 in quoted-printable with CRLF line ends; text and HTML together make a
  multipart/alternative whose boundary cannot occur in quoted-printable output (it holds
  "=_", and quoted-printable writes every "=" as "=3D").
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_LOCAL = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}$")
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_QUOTE_NEEDED = re.compile(r"[^A-Za-z0-9!#$%&'*+/=?^_`{|}~ -]")
_WORD_BYTES = 45  # 45 bytes of UTF-8 -> 60 base64 characters -> a 72-character word
_MAX_LINE = 900


def one_line(value: str) -> str:
    """`value` on one line: control characters become spaces, then runs of white space
    (every kind of line break included) become one space; no space at either end."""
    return " ".join(_CONTROL.sub(" ", value).split())


def encoded_words(text: str) -> str:
    """`text` as RFC 2047 encoded words (UTF-8, base64), folded between words."""
    words: list[str] = []
    chunk: list[str] = []
    size = 0
    for char in text:
        width = len(char.encode("utf-8"))
        if size + width > _WORD_BYTES and chunk:
            words.append(_word("".join(chunk)))
            chunk, size = [], 0
        chunk.append(char)
        size += width
    if chunk:
        words.append(_word("".join(chunk)))
    return "\r\n ".join(words)


def _word(text: str) -> str:
    return "=?utf-8?b?" + base64.b64encode(text.encode("utf-8")).decode("ascii") + "?="


def header_text(value: str) -> str:
    """An unstructured header value (Subject, List-Id's name): one line, ASCII as is,
    anything else encoded; folded only where a line would grow past 900 characters."""
    text = one_line(value)
    if not text.isascii():
        return encoded_words(text)
    if len(text) <= _MAX_LINE:
        return text
    lines: list[str] = []
    current = ""
    for word in text.split(" "):
        while len(word) > _MAX_LINE:  # one enormous word: fold it where it must be
            if current:
                lines.append(current)
                current = ""
            lines.append(word[:_MAX_LINE])
            word = word[_MAX_LINE:]
        if current and len(current) + 1 + len(word) > _MAX_LINE:
            lines.append(current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    if current:
        lines.append(current)
    return "\r\n ".join(lines)


def check_address(address: str) -> str:
    """`address` as it may appear in a header and an SMTP command (a non-ASCII domain
    becomes IDNA); ValueError saying why when it cannot."""
    if not isinstance(address, str) or address.count("@") != 1:
        raise ValueError(f"{str(address)[:80]!r} is not an email address (local@domain)")
    local, domain = address.rsplit("@", 1)
    if not _LOCAL.match(local) or local.startswith(".") or local.endswith(".") or ".." in local:
        raise ValueError(f"{address[:80]!r}: the part before '@' has characters or dots that "
                         "cannot be sent (only letters, digits and !#$%&'*+/=?^_`{|}~.-)")
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            raise ValueError(f"{address[:80]!r}: the domain is not a valid host name") from None
    labels = domain.split(".")
    if len(domain) > 253 or len(labels) < 2 or not all(_LABEL.match(x) for x in labels):
        raise ValueError(f"{address[:80]!r}: the domain is not a valid host name")
    return f"{local}@{domain}"


def parse_mailbox(value: str) -> tuple[str, str]:
    """(display name, address) of a configured mailbox such as `News <news@example.com>`;
    ValueError when it holds no valid address."""
    text = one_line(value)
    name, bracket, rest = text.rpartition("<")
    if bracket:
        address, closing, tail = rest.partition(">")
        if not closing or tail.strip():
            raise ValueError(f"{value[:80]!r} is not a mailbox; write `Name <local@domain>` "
                             "or `local@domain`")
    else:
        name, address = "", text
    name = name.strip()
    if len(name) >= 2 and name[0] == name[-1] == '"':
        name = name[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return name, check_address(address.strip())


def mailbox(name: str, address: str) -> str:
    """A mailbox header value: the display name quoted or encoded, the address checked."""
    address = check_address(address)
    name = one_line(name)
    if not name:
        return address
    if not name.isascii():
        return f"{encoded_words(name)} <{address}>"
    if _QUOTE_NEEDED.search(name):
        name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{name} <{address}>"


def safe_uri(uri: str) -> bool:
    """True when `uri` can stand between angle brackets in a header (List-Unsubscribe):
    printable ASCII without spaces, angle brackets or commas."""
    return (bool(uri) and uri.isascii() and uri.isprintable() and len(uri) <= 2000
            and not any(c in uri for c in " <>,\"'"))


def quoted_printable(text: str) -> bytes:
    """UTF-8 `text` in quoted-printable, lines ending CRLF."""
    data = text.replace("\r\n", "\n").replace("\r", "\n").encode("utf-8")
    return binascii.b2a_qp(data, istext=True).replace(b"\n", b"\r\n")


def compose(headers: Sequence[tuple[str, str]], *, text: str | None, html: str | None,
            boundary: str) -> bytes:
    """The message: `headers` (values already made safe by this module) then the body, a
    text part, an HTML part or both as multipart/alternative."""
    lines = [f"{name}: {value}" for name, value in headers]
    lines.append("MIME-Version: 1.0")
    parts = [(kind, body) for kind, body in (("plain", text), ("html", html))
             if body is not None]
    if not parts:
        parts = [("plain", "")]
    if len(parts) == 1:
        kind, body = parts[0]
        lines += [f'Content-Type: text/{kind}; charset="utf-8"',
                  "Content-Transfer-Encoding: quoted-printable"]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")
        return head + quoted_printable(body)
    lines.append(f'Content-Type: multipart/alternative; boundary="{boundary}"')
    out = [("\r\n".join(lines) + "\r\n\r\n").encode("ascii")]
    for kind, body in parts:
        out.append(f'--{boundary}\r\nContent-Type: text/{kind}; charset="utf-8"\r\n'
                   "Content-Transfer-Encoding: quoted-printable\r\n\r\n".encode("ascii"))
        out.append(quoted_printable(body))
        out.append(b"\r\n")
    out.append(f"--{boundary}--\r\n".encode("ascii"))
    return b"".join(out)
