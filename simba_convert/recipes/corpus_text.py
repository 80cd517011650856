"""Plain text out of documentation and code files: HTML, POD, dictd databases, source trees.

Pure, deterministic functions of their input (standard library only), used by corpus_large.py:
- `html_to_text`: html.parser; scripts, styles, the head and navigation (by tag, class or id) are dropped,
  whitespace collapses outside <pre>, block elements end lines, headings and paragraphs end paragraphs.
- `pod_to_text`: Perl's POD: headings and items as lines, verbatim blocks kept, formatting codes resolved,
  blocks for other formatters (`=begin html` ...) dropped.
- `dictd_entries`: the entries of a dictd database (`.index` + `.dict`), in file order.
- `read_tree`: the files of an unpacked package chosen by glob patterns, sorted by path, decoded as UTF-8.
"""

from __future__ import annotations

import fnmatch
import html
import re
from html.parser import HTMLParser
from pathlib import Path

# --- HTML -----------------------------------------------------------------------------------------
_SKIP_TAGS = frozenset({"script", "style", "head", "nav", "noscript", "svg", "template", "button", "form"})
# Navigation and page furniture of the generators in the corpus: DocBook (navheader, navfooter, toc),
# publican (docnav, banner, title), Sphinx (sphinxsidebar, related, headerlink, hd/ft), texinfo (header,
# copiable-anchor).
SKIP_CLASSES = frozenset({"navheader", "navfooter", "docnav", "toc", "sphinxsidebar", "related", "headerlink",
                          "header", "nav", "footer", "breadcrumbs", "searchbox", "copiable-anchor"})
SKIP_IDS = frozenset({"banner", "title", "hd", "ft", "searchbox", "sidebar", "footer"})
_VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source",
                   "track", "wbr"})
_PARAGRAPH = frozenset({"p", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "blockquote", "table", "ul", "ol", "dl",
                        "section", "article", "figure"})
_LINE = frozenset({"div", "li", "dt", "dd", "tr", "br", "hr", "caption", "main", "body"})
_CELL = frozenset({"td", "th"})
_WS = re.compile(r"\s+")


class _HTMLText(HTMLParser):
    def __init__(self, skip_classes: frozenset, skip_ids: frozenset):
        super().__init__(convert_charrefs=True)
        self.skip_classes, self.skip_ids = skip_classes, skip_ids
        self.stack: list[tuple[str, bool, bool]] = []  # (tag, skipped, inside <pre>)
        self.out: list[str] = []
        self.pending = 0  # newlines owed before the next text (1: line end, 2: paragraph end)

    def _state(self) -> tuple[bool, bool]:
        return self.stack[-1][1:] if self.stack else (False, False)

    def _break(self, n: int) -> None:
        self.pending = max(self.pending, n)

    def handle_starttag(self, tag, attrs):
        skipped, pre = self._state()
        a = dict(attrs)
        skip = skipped or tag in _SKIP_TAGS or a.get("id") in self.skip_ids or bool(
            self.skip_classes.intersection((a.get("class") or "").split()))
        if not skip:
            if tag in _PARAGRAPH:
                self._break(2)
            elif tag in _LINE:
                self._break(1)
            elif tag in _CELL:
                self._text(" ", pre)
        if tag not in _VOID:
            self.stack.append((tag, skip, pre or tag == "pre"))

    def handle_startendtag(self, tag, attrs):
        if tag in ("br", "hr") and not self._state()[0]:
            self._break(1)

    def handle_endtag(self, tag):
        if tag in _VOID or not any(t == tag for t, _, _ in self.stack):
            return  # a stray end tag: ignored, as a browser would
        while self.stack:
            t, skipped, _ = self.stack.pop()
            if t == tag:
                break
        if not skipped:
            self._break(2 if tag in _PARAGRAPH else 1 if tag in _LINE else 0)

    def handle_data(self, data):
        skipped, pre = self._state()
        if not skipped:
            self._text(data, pre)

    def _text(self, text: str, pre: bool) -> None:
        at_start = self.pending or not self.out or self.out[-1].endswith("\n")
        if not pre:
            text = _WS.sub(" ", text)
            if at_start:
                text = text.lstrip(" ")
        if not text:
            return
        if self.pending and self.out:
            self.out[-1] = self.out[-1].rstrip(" ")
            self.out.append("\n" * self.pending)
        self.pending = 0
        self.out.append(text)


def html_to_text(markup: str, skip_classes: frozenset = SKIP_CLASSES, skip_ids: frozenset = SKIP_IDS) -> str:
    """Readable text of an HTML page (see the module docstring); lines have no trailing spaces and at most one
    blank line separates paragraphs."""
    p = _HTMLText(skip_classes, skip_ids)
    p.feed(markup)
    p.close()
    text = "".join(p.out).replace("\xa0", " ").replace("\r\n", "\n")
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return re.sub(r"\n{3,}", "\n\n", text).strip("\n")


# --- POD ------------------------------------------------------------------------------------------
_POD_ESCAPES = {"lt": "<", "gt": ">", "verbar": "|", "sol": "/"}


_POD_CODE = re.compile(r"([BICFSLEXZ])(<+)(\s?)")


def pod_formatting(text: str) -> str:
    """Resolve POD formatting codes (B<> I<> C<> F<> S<> L<> E<> X<> Z<>, also the C<< ... >> form)."""
    out, i, n = [], 0, len(text)
    while i < n:
        m = _POD_CODE.search(text, i)
        if m is None:
            out.append(text[i:])
            break
        out.append(text[i:m.start()])
        code, opens = m.group(1), len(m.group(2))
        if opens == 1:  # single bracket: nested codes allowed, ends at the matching '>'
            depth, j = 1, m.start() + 2
            while j < n and depth:
                if text[j] == "<" and text[j - 1] in "BICFSLEXZ":
                    depth += 1
                elif text[j] == ">":
                    depth -= 1
                j += 1
            inner, end = (text[m.start() + 2:j - 1], j) if depth == 0 else (text[m.start() + 2:], n)
        else:  # C<< x >>: ends at whitespace followed by as many '>'
            close = re.compile(r"\s" + ">" * opens).search(text, m.end())
            inner, end = (text[m.end():close.start()], close.end()) if close else (text[m.end():], n)
        out.append(_pod_code(code, pod_formatting(inner)))
        i = end
    return "".join(out)


def _pod_code(code: str, inner: str) -> str:
    if code in "XZ":
        return ""
    if code == "E":
        if inner in _POD_ESCAPES:
            return _POD_ESCAPES[inner]
        if inner.isdigit() or inner[:2].lower() == "0x":
            return chr(int(inner, 0))
        return html.unescape(f"&{inner};")
    if code == "L":
        if "|" in inner:
            return inner.split("|", 1)[0]
        name, _, section = inner.partition("/")
        section = section.strip('"')
        return f'"{section}" in {name}' if name and section else section or name
    return inner


def pod_to_text(pod: str) -> str:
    """Text of a POD document: `=head` and `=item` lines keep their text, verbatim paragraphs stay as they are,
    ordinary paragraphs get their formatting codes resolved; `=begin X`/`=end X` and `=for X` drop the content
    meant for formatter X (except `text`); code outside `=pod` ... `=cut` is not POD and is skipped."""
    out: list[str] = []
    in_pod, skip_until = False, None
    for para in re.split(r"\n[ \t]*\n", pod.replace("\r\n", "\n")):
        if not para.strip():
            continue
        if para.startswith("="):
            m = re.match(r"=(\w+)\s*(.*)", para, re.S)
            command, rest = (m.group(1), m.group(2).strip()) if m else ("", "")
            in_pod = command != "cut"
            if skip_until is not None:
                if command == "end" and rest.split()[:1] == [skip_until]:
                    skip_until = None
                continue
            if command == "begin" and rest.split()[:1] != ["text"]:
                skip_until = (rest.split() or [""])[0]
            elif command.startswith("head") or command == "item":
                if rest and rest not in ("*", "-") or command.startswith("head"):
                    out.append(pod_formatting(" ".join(rest.split())))
            elif command == "for" and rest.split()[:1] == ["text"]:
                out.append(rest.split(None, 1)[1] if len(rest.split(None, 1)) > 1 else "")
            continue
        if not in_pod or skip_until is not None:
            continue
        if para[0] in " \t":
            out.append(para.rstrip())
        else:
            out.append(pod_formatting(" ".join(para.split())))
    return "\n\n".join(p for p in out if p)


# --- dictd ----------------------------------------------------------------------------------------
_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def dictd_number(s: str) -> int:
    """A dictd index number: base 64, most significant digit first, in dictd's own alphabet."""
    n = 0
    for ch in s:
        n = n * 64 + _B64.index(ch)
    return n


def dictd_entries(index: str, data: str, skip_prefix: str = "00-database") -> list[str]:
    """The entries of a dictd database in file order (an entry listed under several headwords once), except the
    database's own entries (headwords starting with `skip_prefix`)."""
    spans = set()
    for line in index.splitlines():
        if not line or line.startswith(skip_prefix):
            continue
        _word, off, size = line.split("\t")[:3]
        spans.add((dictd_number(off), dictd_number(size)))
    return [data[o:o + n] for o, n in sorted(spans)]


# --- trees of files --------------------------------------------------------------------------------
def read_tree(root: Path, patterns: tuple[str, ...], exclude: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """[(path relative to root, text)] of the files matching any glob in `patterns` and no fnmatch pattern in
    `exclude` (matched against the whole relative path, where `*` also crosses '/'),
    sorted by path; CRLF becomes LF. Files that are not UTF-8, or contain NUL, are left out (test data of
    other encodings, binary fixtures)."""
    chosen = {p for pat in patterns for p in root.glob(pat) if p.is_file() and not p.is_symlink()}
    out = []
    for p in sorted(chosen, key=lambda q: q.relative_to(root).as_posix()):
        rel = p.relative_to(root).as_posix()
        if any(fnmatch.fnmatchcase(rel, x) for x in exclude):
            continue
        try:
            text = p.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            continue
        if "\x00" not in text:
            out.append((rel, text.replace("\r\n", "\n")))
    return out
