"""A small reader for R's serialization format (XDR, versions 2 and 3) and lazy-load databases.

Why not the `rdata` package: the corpus needs only character vectors (Jane Austen's novels are
stored one line per element) from one `.rdx`/`.rdb` pair, and a ~150-line reader of the documented
format keeps the data build free of an extra dependency. It handles the object types such data
files contain (vectors, lists, pairlists, symbols, environments by reference, compact ALTREP
sequences); anything else raises ValueError rather than guessing.

Format: R Internals §1.8 "Serialization formats"; lazy-load databases are described in
`?lazyLoad`: the `.rdx` index is a serialized list(variables=, references=, compressed=), whose
`variables` maps each name to c(offset, length) of a record in `.rdb`; a record is a 4-byte
big-endian uncompressed length followed by a zlib stream (or, for compression types 2/3, a type
byte 'Z', '2', 'X' or '0' and then a zlib, bzip2, xz or stored stream).
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import struct
import zlib
from pathlib import Path

# SEXP type codes and pseudo-types used by the serializer (R's serialize.c).
NILSXP, SYMSXP, LISTSXP, CLOSXP, ENVSXP = 0, 1, 2, 3, 4
LANGSXP, CHARSXP, LGLSXP, INTSXP, REALSXP, CPLXSXP, STRSXP = 6, 9, 10, 13, 14, 15, 16
VECSXP, EXPRSXP, RAWSXP, S4SXP = 19, 20, 24, 25
ALTREP_SXP, ATTRLISTSXP, ATTRLANGSXP = 238, 239, 240
BASEENV_SXP, EMPTYENV_SXP, BCREPREF, BCREPDEF = 241, 242, 243, 244
BASENAMESPACE_SXP, NAMESPACESXP, PACKAGESXP = 247, 249, 250
MISSINGARG_SXP, UNBOUNDVALUE_SXP, GLOBALENV_SXP, NILVALUE_SXP, REFSXP = 251, 252, 253, 254, 255

NA_INT = -(2**31)
_SINGLETONS = {NILVALUE_SXP, EMPTYENV_SXP, BASEENV_SXP, GLOBALENV_SXP, UNBOUNDVALUE_SXP,
               MISSINGARG_SXP, BASENAMESPACE_SXP}


class RObject:
    """An R value: `value` (list of elements, str, or None), `attributes` (dict), and the type code."""

    def __init__(self, sexptype: int, value, attributes: dict | None = None):
        self.type = sexptype
        self.value = value
        self.attributes = attributes or {}

    def __repr__(self) -> str:
        return f"RObject(type={self.type}, len={len(self.value) if isinstance(self.value, list) else '-'})"


class _Reader:
    def __init__(self, data: bytes):
        self.buf, self.pos, self.refs = data, 0, []

    def _take(self, n: int) -> bytes:
        if self.pos + n > len(self.buf):
            raise ValueError("truncated R serialization stream")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def int(self) -> int:
        return struct.unpack(">i", self._take(4))[0]

    def header(self) -> None:
        if self._take(2) != b"X\n":
            raise ValueError("not an XDR R serialization stream (only format 'X' is supported)")
        version = self.int()
        self.int(), self.int()  # writer's and minimal reader's R versions
        if version == 3:
            self._take(self.int())  # native encoding name
        elif version != 2:
            raise ValueError(f"unsupported R serialization version {version}")

    def item(self):
        flags = self.int()
        t, levels = flags & 0xFF, flags >> 12
        has_attr, has_tag = bool(flags & (1 << 9)), bool(flags & (1 << 10))
        if t in _SINGLETONS:
            return None
        if t == REFSXP:
            idx = flags >> 8 or self.int()
            return self.refs[idx - 1]
        if t == SYMSXP:
            sym = RObject(SYMSXP, self.item())  # the CHARSXP name
            self.refs.append(sym)
            return sym
        if t in (PACKAGESXP, NAMESPACESXP):
            obj = RObject(t, self._string_list())
            self.refs.append(obj)
            return obj
        if t == ENVSXP:
            return self._env()
        if t in (LISTSXP, LANGSXP, ATTRLISTSXP, ATTRLANGSXP):
            return self._pairlist(has_attr, has_tag)
        if t == ALTREP_SXP:
            return self._altrep()
        if t == CHARSXP:
            n = self.int()
            if n == -1:
                return None  # NA_character_
            raw = self._take(n)
            return raw.decode("latin-1" if levels & (1 << 2) else "utf-8")
        if t in (LGLSXP, INTSXP):
            n = self.int()
            value = list(struct.unpack(f">{n}i", self._take(4 * n)))
        elif t == REALSXP:
            n = self.int()
            value = list(struct.unpack(f">{n}d", self._take(8 * n)))
        elif t == RAWSXP:
            value = self._take(self.int())
        elif t in (STRSXP, VECSXP, EXPRSXP):
            value = [self.item() for _ in range(self.int())]
        else:
            raise ValueError(f"unsupported R object type {t} in serialization stream")
        attrs = self._attributes() if has_attr else {}
        return RObject(t, value, attrs)

    def _string_list(self) -> list:
        if self.int() != 0:
            raise ValueError("unexpected package/namespace info layout")
        return [self.item() for _ in range(self.int())]

    def _env(self) -> RObject:
        env = RObject(ENVSXP, None)
        self.refs.append(env)  # registered before its contents, which may refer back to it
        self.int()  # locked flag
        enclos, frame, hashtab, attrs = self.item(), self.item(), self.item(), self.item()
        env.value = {"enclos": enclos, "frame": frame, "hashtab": hashtab}
        env.attributes = attrs if isinstance(attrs, dict) else {}
        return env

    def _pairlist(self, has_attr: bool, has_tag: bool) -> dict | RObject:
        """Read a pairlist as {tag: value} (tags are symbol names; untagged cells get their index)."""
        out: dict = {}
        while True:
            if has_attr:
                self._attributes()
            tag = self.item() if has_tag else None
            key = tag.value if isinstance(tag, RObject) else len(out)
            out[key] = self.item()
            flags = self.int()  # the CDR: another cell or the terminating NILVALUE
            t = flags & 0xFF
            if t == NILVALUE_SXP:
                return out
            if t not in (LISTSXP, LANGSXP, ATTRLISTSXP, ATTRLANGSXP):
                raise ValueError(f"unexpected pairlist tail of type {t}")
            has_attr, has_tag = bool(flags & (1 << 9)), bool(flags & (1 << 10))

    def _attributes(self) -> dict:
        attrs = self.item()
        return attrs if isinstance(attrs, dict) else {}

    def _altrep(self) -> RObject:
        info, state, attrs = self.item(), self.item(), self.item()
        cls = info.get(0).value if isinstance(info, dict) else None
        if cls == "compact_intseq":  # state = c(length, start, step) as doubles
            n, start, step = (int(v) for v in state.value)
            return RObject(INTSXP, [start + i * step for i in range(n)], attrs or {})
        if cls == "wrap_string" or cls == "wrap_integer" or cls == "wrap_real":
            return state.value[0]
        raise ValueError(f"unsupported ALTREP class {cls!r}")


def unserialize(data: bytes):
    """Parse one serialized R object (bytes starting with b'X\\n')."""
    r = _Reader(data)
    r.header()
    return r.item()


def _decompress_record(record: bytes) -> bytes:
    n = struct.unpack(">I", record[:4])[0]
    body = record[4:]
    kind = body[:1]
    if kind == b"Z":
        out = zlib.decompress(body[1:])
    elif kind == b"2":
        out = bz2.decompress(body[1:])
    elif kind == b"X":
        out = lzma.decompress(body[1:])
    elif kind == b"0":
        out = body[1:]
    else:
        out = zlib.decompress(body)
    if len(out) != n:
        raise ValueError(f"lazy-load record decompressed to {len(out)} bytes, header says {n}")
    return out


def read_lazyload_db(stem: Path) -> dict[str, object]:
    """Read every variable of an R lazy-load database `<stem>.rdx` + `<stem>.rdb` into {name: RObject}."""
    rdx_raw = Path(f"{stem}.rdx").read_bytes()
    index_bytes = gzip.decompress(rdx_raw) if rdx_raw[:2] == b"\x1f\x8b" else _decompress_record(rdx_raw)
    index = unserialize(index_bytes)
    names = index.attributes.get("names").value
    variables = index.value[names.index("variables")]
    var_names = variables.attributes["names"].value
    rdb = Path(f"{stem}.rdb").read_bytes()
    out = {}
    for name, loc in zip(var_names, variables.value):
        offset, length = loc.value
        out[name] = unserialize(_decompress_record(rdb[offset:offset + length]))
    return out
