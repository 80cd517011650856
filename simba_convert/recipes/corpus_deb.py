"""Read Debian packages in Python: no dpkg tools needed.

A .deb is an `ar` archive (magic `!<arch>\\n`, then members with a 60-byte header: name[16], mtime[12],
uid[6], gid[6], mode[8], size[10], `\\x60\\n`; bodies padded to an even length) holding `debian-binary`,
`control.tar.*` and `data.tar.*`. The data tarball is xz-compressed in Debian (gzip in old packages, zstd in
Ubuntu's, none possible): xz and gzip decompress with the standard library, zstd needs the `zstandard`
package (extra `[recipes]`).
"""

from __future__ import annotations

import gzip
import lzma

AR_MAGIC = b"!<arch>\n"


def ar_members(data: bytes) -> list[tuple[str, bytes]]:
    """[(name, body)] of an `ar` archive, in archive order (GNU names end with '/', which is dropped)."""
    if data[:8] != AR_MAGIC:
        raise ValueError("not a Debian package (missing ar magic)")
    out, pos = [], 8
    while pos + 60 <= len(data):
        header = data[pos:pos + 60]
        if header[58:60] != b"`\n":
            raise ValueError(f"corrupt ar member header at byte {pos}")
        name = header[:16].decode("ascii").strip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip())
        if pos + 60 + size > len(data):
            raise ValueError(f"truncated ar member {name!r}")
        out.append((name, data[pos + 60:pos + 60 + size]))
        pos += 60 + size + (size & 1)
    return out


def _zstd_decompress(body: bytes) -> bytes:
    from simba_convert.errors import require

    zstandard = require("zstandard", "recipes")
    # Debian's zstd frames may not record the content size: stream-decompress rather than one-shot.
    with zstandard.ZstdDecompressor().stream_reader(body) as reader:
        return reader.read()


def deb_data_tar(deb: bytes) -> bytes:
    """The uncompressed data.tar of a .deb."""
    for name, body in ar_members(deb):
        if not name.startswith("data.tar"):
            continue
        if name.endswith(".xz"):
            return lzma.decompress(body)
        if name.endswith(".gz"):
            return gzip.decompress(body)
        if name.endswith(".zst"):
            return _zstd_decompress(body)
        if name == "data.tar":
            return body
        raise ValueError(f"unsupported data member {name!r} in the .deb")
    raise ValueError("no data.tar member in the .deb")


def deb_file_name(name: str, version: str, arch: str = "*") -> str:
    """The file name `apt-get download` gives a package (an epoch's ':' is written '%3a')."""
    return f"{name}_{version.replace(':', '%3a')}_{arch}.deb"
