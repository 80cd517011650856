"""The sources of the large corpus (`corpus --size large`): the five small ones, then documentation and code
from Debian packages, each pinned by version and checksums in corpus_manifest_large.json.

Each extraction function takes the folder a .deb was unpacked into and returns the source's text; paths
inside a package are globbed (a `--update-manifest` to a newer version keeps working as long as the package
keeps its layout). Files are read in sorted path order and joined with one blank line between them.
What is taken from each package and why:

- Documentation as reStructuredText where the package ships Sphinx's `_sources` (the Linux kernel's, without
  its translations; Python's), else HTML turned into text by corpus_text.html_to_text (Django, PostgreSQL,
  GNU Octave, the Debian Administrator's Handbook in English; Django's highlighted `_modules` and its
  index/search pages are left out), the plain-text Debian Reference, and Perl's POD manuals as text.
- GCIDE (Webster's 1913 plus WordNet glosses), every dictionary entry in file order, lines unindented.
- Code: the Python standard library and its test suite, SymPy, Django and NumPy (`.py` files), Perl's core
  modules (`.pm`, `.pl`; the Unicode data tables in `unicore/` and `Unicode/Collate/` are left out).

`LICENCES` gives each package's licence as its copyright file (`usr/share/doc/<package>/copyright`) states it.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .corpus_text import dictd_entries, html_to_text, pod_to_text, read_tree


@dataclass(frozen=True)
class DebSource:
    """A source of the large corpus from one Debian package; its version lives in the manifest."""

    name: str
    package: str
    extract: Callable[[Path], str]
    licence: str


def _join(parts) -> str:
    return "\n\n".join(p.strip("\n") for p in parts if p.strip())


def _files(patterns: tuple[str, ...], exclude: tuple[str, ...] = ()) -> Callable[[Path], str]:
    def extract(root: Path) -> str:
        found = read_tree(root, patterns, exclude)
        if not found:
            raise ValueError(f"no file matches {patterns} in {root}")
        return _join(text for _, text in found)

    return extract


def _html(patterns: tuple[str, ...], exclude: tuple[str, ...] = ()) -> Callable[[Path], str]:
    def extract(root: Path) -> str:
        found = read_tree(root, patterns, exclude)
        if not found:
            raise ValueError(f"no HTML file matches {patterns} in {root}")
        return _join(html_to_text(text) for _, text in found)

    return extract


def perl_pod(root: Path) -> str:
    found = read_tree(root, ("usr/share/perl/*/pod/*.pod",))
    if not found:
        raise ValueError(f"no .pod file in {root}")
    return _join(pod_to_text(text) for _, text in found)


def debian_reference(root: Path) -> str:
    (path,) = root.glob("usr/share/debian-reference/debian-reference.en.txt.gz")
    return gzip.decompress(path.read_bytes()).decode("utf-8").replace("\r\n", "\n").strip("\n")


def gcide(root: Path) -> str:
    (index,) = root.glob("usr/share/dictd/gcide.index")
    (data,) = root.glob("usr/share/dictd/gcide.dict.dz")
    # dictzip is gzip with random-access data in an extra field: gzip reads it. A handful of bytes are
    # Windows-1252 punctuation (0x92 for an apostrophe), the rest ASCII.
    text = gzip.decompress(data.read_bytes()).decode("cp1252")
    entries = dictd_entries(index.read_text(encoding="utf-8"), text)
    return _join("\n".join(line.strip() for line in e.strip("\n").split("\n")) for e in entries)


SMALL_NAMES = ("shakespeare_modern", "milton", "jane_austen_novels", "bible_kjv", "bible_web")

DEB_SOURCES = (
    DebSource("linux_doc", "linux-doc-6.1",
              _files(("usr/share/doc/linux-doc-*/html/_sources/**/*.txt",), ("*/_sources/translations/*",)),
              "GPL-2 (the kernel's copyright file; a few parts under other free licences)"),
    DebSource("python_doc", "python3.11-doc", _files(("usr/share/doc/python3.*/html/_sources/**/*.txt",)),
              "PSF License (Python's documentation)"),
    DebSource("django_doc", "python-django-doc",
              _html(("usr/share/doc/python-django-doc/html/**/*.html",),
                    ("*/html/_modules/*", "*/html/genindex*.html", "*/html/search.html", "*/html/py-modindex.html")),
              "BSD-3-Clause"),
    DebSource("postgresql_doc", "postgresql-doc-15", _html(("usr/share/doc/postgresql-doc-*/html/*.html",)),
              "PostgreSQL Licence (permissive, BSD-like)"),
    DebSource("octave_doc", "octave-doc", _html(("usr/share/doc/octave/octave.html/*.html",)),
              "GPL-3+ (the Octave manual)"),
    DebSource("debian_handbook", "debian-handbook", _html(("usr/share/doc/debian-handbook/html/en-US/*.html",)),
              "GPL-2+ or CC-BY-SA-3.0"),
    DebSource("debian_reference", "debian-reference-en", debian_reference, "GPL-2+"),
    DebSource("perl_doc", "perl-doc", perl_pod, "GPL-1+ or Artistic (Perl's manuals)"),
    DebSource("gcide", "dict-gcide", gcide,
              "GPL-2+ (GCIDE; derived from the public-domain Webster's Revised Unabridged Dictionary, 1913, "
              "and WordNet 1.5)"),
    DebSource("python_stdlib_core", "libpython3.11-minimal", _files(("usr/lib/python3.*/**/*.py",)),
              "PSF License (copyright file of libpython3.11-minimal)"),
    DebSource("python_stdlib", "libpython3.11-stdlib", _files(("usr/lib/python3.*/**/*.py",)),
              "PSF License (same source package as libpython3.11-minimal; this .deb has no copyright file)"),
    DebSource("python_testsuite", "libpython3.11-testsuite", _files(("usr/lib/python3.*/**/*.py",)),
              "PSF License (same source package as libpython3.11-minimal; this .deb has no copyright file)"),
    DebSource("sympy", "python3-sympy", _files(("usr/lib/python3/dist-packages/sympy/**/*.py",)),
              "BSD-3-Clause"),
    DebSource("django", "python3-django", _files(("usr/lib/python3/dist-packages/django/**/*.py",)),
              "BSD-3-Clause (a few files Expat / Apache-2.0 / PSF)"),
    DebSource("numpy", "python3-numpy", _files(("usr/lib/python3/dist-packages/numpy/**/*.py",)),
              "BSD-3-Clause (a few files MIT / zlib / public domain)"),
    DebSource("perl_modules", "perl-modules-5.36",
              _files(("usr/share/perl/*/**/*.pm", "usr/share/perl/*/**/*.pl"),
                     ("usr/share/perl/*/unicore/*", "usr/share/perl/*/Unicode/Collate/*")),
              "GPL-1+ or Artistic (a few files Expat / Unicode / zlib)"),
)


def large_manifest(report: dict, small_manifest: dict, outputs: dict, valid_fraction: float,
                   separator: str) -> dict:
    """The large manifest of a build (sources in build order) that `--update-manifest` writes."""
    sources = {}
    for name, r in report.items():
        if name in SMALL_NAMES:
            sources[name] = {**small_manifest["sources"][name], "licence": "public domain"}
        else:
            sources[name] = {k: r[k] for k in ("registry", "package", "version", "archive", "archive_sha256",
                                               "licence", "chars", "bytes", "sha256")}
    return {
        "note": "The large corpus (corpus --size large): the five small sources (pinned as in corpus_manifest.json) "
                "then Debian packages, each pinned by version, .deb SHA256 and extracted-text SHA256. apt serves "
                "only current versions: when one is gone, `corpus --size large --update-manifest` rewrites this "
                "file for the versions served then (a different corpus).",
        "sources": sources,
        "split": {"rule": "per source, validation = the tail starting at the first line that begins at or after "
                          f"character len*(1-{valid_fraction}); sources joined in this order with {separator}",
                  "valid_fraction": valid_fraction},
        "outputs": outputs,
    }
