"""The large corpus's machinery (simba_convert/recipes/corpus_deb.py, corpus_text.py, corpus.py --size large,
tokenize_corpus's pieces) on handmade packages and texts: no network, no dpkg."""

from __future__ import annotations

import gzip
import io
import json
import lzma
import subprocess
import sys
import tarfile

import numpy as np
import pytest

from simba_convert.errors import MissingExtraError
from simba_convert.recipes import corpus, corpus_deb, corpus_text, tokenize_corpus
from simba_convert.recipes import tokenizer as bpe
from simba_convert.recipes.corpus_large import DebSource, _files, _html


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _ar_member(name: str, body: bytes) -> bytes:
    header = f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{644:<8}{len(body):<10}".encode() + b"`\n"
    return header + body + (b"\n" if len(body) % 2 else b"")


def make_deb(files: dict[str, bytes], compression: str = "xz") -> bytes:
    """A minimal .deb: an ar archive of debian-binary, control.tar.xz and data.tar[.<compression>]."""
    data = _tar(files)
    body = {"xz": lzma.compress, "gz": gzip.compress, "": lambda b: b}[compression](data)
    name = "data.tar" + (f".{compression}" if compression else "")
    return (corpus_deb.AR_MAGIC + _ar_member("debian-binary", b"2.0\n")
            + _ar_member("control.tar.xz", lzma.compress(_tar({"./control": b"Package: x\n"})))
            + _ar_member(name, body))


PAGE = ("<html><head><title>T</title><script>var x = 1;</script></head><body>"
        "<div class='navheader'><a href='p.html'>Prev</a> Next</div>"
        "<h1>The   Title<a class='headerlink' href='#t'>\u00b6</a></h1>"
        "<p>Some <b>bold</b>\n   text &amp; more&nbsp;here.</p></span>"
        "<pre>def f():\n    return 1\n</pre>"
        "<ul><li>one</li><li>two<br/>lines</li></ul><table><tr><td>a</td><td>b</td></tr></table></body></html>")
PAGE_TEXT = "The Title\n\nSome bold text & more here.\n\ndef f():\n    return 1\n\none\ntwo\nlines\n\na b"


# --- .deb -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("compression", ["xz", "gz", ""])
def test_deb_data_tar_reads_a_handmade_deb(compression):
    files = {"usr/share/doc/pkg/copyright": b"Public domain.\n", "usr/share/doc/pkg/odd": b"abc"}
    deb = make_deb(files, compression)
    names = [n for n, _ in corpus_deb.ar_members(deb)]
    assert names == ["debian-binary", "control.tar.xz", "data.tar" + (f".{compression}" if compression else "")]
    with tarfile.open(fileobj=io.BytesIO(corpus_deb.deb_data_tar(deb))) as tar:
        assert {m.name: tar.extractfile(m).read() for m in tar.getmembers()} == files


def test_deb_reader_refuses_what_is_not_a_deb():
    with pytest.raises(ValueError, match="ar magic"):
        corpus_deb.deb_data_tar(b"PK\x03\x04 a zip")
    no_data = corpus_deb.AR_MAGIC + _ar_member("debian-binary", b"2.0\n")
    with pytest.raises(ValueError, match="no data.tar"):
        corpus_deb.deb_data_tar(no_data)
    with pytest.raises(ValueError, match="truncated"):
        corpus_deb.ar_members(make_deb({"a": b"x"})[:-5])


def test_zstd_deb_needs_the_recipes_extra(monkeypatch):
    deb = corpus_deb.AR_MAGIC + _ar_member("data.tar.zst", b"\x28\xb5\x2f\xfd not really zstd")
    monkeypatch.setitem(sys.modules, "zstandard", None)  # as if not installed
    with pytest.raises(MissingExtraError, match=r"simba-convert\[recipes\]"):
        corpus_deb.deb_data_tar(deb)


def test_zstd_deb_is_read_when_zstandard_is_installed():
    zstandard = pytest.importorskip("zstandard")
    data = _tar({"a.txt": b"hello"})
    deb = corpus_deb.AR_MAGIC + _ar_member("data.tar.zst", zstandard.ZstdCompressor().compress(data))
    assert corpus_deb.deb_data_tar(deb) == data


def test_deb_file_name_encodes_the_epoch():
    assert corpus_deb.deb_file_name("python3-numpy", "1:1.24.2-1") == "python3-numpy_1%3a1.24.2-1_*.deb"


# --- text extraction ---------------------------------------------------------------------------------------
def test_html_to_text_drops_furniture_and_keeps_pre():
    assert corpus_text.html_to_text(PAGE) == PAGE_TEXT
    assert corpus_text.html_to_text(PAGE) == corpus_text.html_to_text(PAGE)  # deterministic
    assert corpus_text.html_to_text("<p>a</p></div><p>b</p>") == "a\n\nb"  # a stray end tag is ignored
    assert corpus_text.html_to_text("<div id='sidebar'><p>menu</p></div><p>x &lt; y</p>") == "x < y"


def test_pod_to_text():
    pod = ("=pod\n\n=encoding utf8\n\n=head1 NAME\n\nperlfoo - I<a> B<thing> with C<< $a->b >> and C<$x E<gt> 1>\n\n"
           "    verbatim  code\n    more\n\n=begin html\n\n<p>only for html</p>\n\n=end html\n\n"
           "=over 4\n\n=item *\n\nL<the docs|perlpod>, L<perlfunc/open>, L<perlsyn>X<index>E<eacute>\n\n=back\n\n"
           "=cut\n\nsub not_pod { 1 }\n\n=head2 Back\n\nText.\n")
    assert corpus_text.pod_to_text(pod) == (
        "NAME\n\nperlfoo - a thing with $a->b and $x > 1\n\n    verbatim  code\n    more\n\n"
        "the docs, \"open\" in perlfunc, perlsyn\u00e9\n\nBack\n\nText.")


def test_dictd_entries_in_file_order_without_the_database_entries():
    assert corpus_text.dictd_number("A") == 0 and corpus_text.dictd_number("Kj") == 10 * 64 + 35
    data = "header entry\nabandon\n  to give up\nabbey\n  a monastery\n"
    b64 = corpus_text._B64
    index = "\n".join([f"00-database-info\t{b64[0]}\t{b64[13]}", f"abbey\t{b64[34]}\t{b64[20]}",
                       f"abandon\t{b64[13]}\t{b64[21]}", f"Abandon\t{b64[13]}\t{b64[21]}"])
    assert corpus_text.dictd_entries(index, data) == ["abandon\n  to give up\n", "abbey\n  a monastery\n"]


def test_read_tree_sorts_excludes_and_skips_binary(tmp_path):
    for rel, data in {"b/z.py": b"z = 1\r\n", "a.py": b"a = 1\n", "b/skip/x.py": b"x\n", "bad.py": b"\xff\xfe",
                      "nul.py": b"a\x00b", "c.txt": b"no"}.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(data)
    got = corpus_text.read_tree(tmp_path, ("**/*.py",), ("b/skip/*",))
    assert got == [("a.py", "a = 1\n"), ("b/z.py", "z = 1\n")]


# --- building and the manifest ----------------------------------------------------------------------------
DOC = DebSource("doc", "fake-doc", _html(("usr/share/doc/fake-doc/html/*.html",)), "public domain")
CODE = DebSource("code", "fake-code", _files(("usr/lib/fake/**/*.py",)), "MIT")


def _fake_packages(cache):
    """Two handmade .debs in the cache, as `apt-get download` would name them (so nothing is downloaded)."""
    archives = cache / "archives"
    archives.mkdir(parents=True)
    pages = {f"usr/share/doc/fake-doc/html/p{i}.html": PAGE.replace("Title", f"Page {i}").encode() for i in range(3)}
    (archives / "fake-doc_1.0-1_all.deb").write_bytes(make_deb(pages))
    code = {f"usr/lib/fake/m{i}.py": ("".join(f"def f{j}(x):\n    return x + {j}\n\n" for j in range(40))).encode()
            for i in range(3)}
    (archives / "fake-code_1%3a2.0-1_all.deb").write_bytes(make_deb(code))
    return {"fake-doc": "1.0-1", "fake-code": "1:2.0-1"}


def test_large_build_updates_then_verifies_its_manifest(tmp_path, monkeypatch):
    versions = _fake_packages(tmp_path / "cache")
    manifest = tmp_path / "manifest_large.json"
    monkeypatch.setattr(corpus, "SMALL_NAMES", ())
    monkeypatch.setattr(corpus, "DEB_SOURCES", (DOC, CODE))
    monkeypatch.setattr(corpus, "MANIFEST_LARGE", manifest)
    monkeypatch.setattr(corpus, "candidate_version", versions.__getitem__)
    base = ["--size", "large", "--cache", str(tmp_path / "cache")]
    assert corpus.main(base + ["--out", str(tmp_path / "a"), "--update-manifest"]) == 0
    pinned = json.loads(manifest.read_text())
    assert list(pinned["sources"]) == ["doc", "code"]
    assert pinned["sources"]["code"]["version"] == "1:2.0-1" and pinned["sources"]["doc"]["licence"] == "public domain"
    assert corpus.main(base + ["--out", str(tmp_path / "b")]) == 0  # verified against the manifest just written
    for split in ("train.txt", "valid.txt"):
        assert (tmp_path / "a" / split).read_bytes() == (tmp_path / "b" / split).read_bytes()  # deterministic
    train = (tmp_path / "a" / "train.txt").read_text()
    assert train.count(corpus.EOT) == 1 and "Page 0" in train and "def f0(x):" in train and "Prev" not in train
    build = json.loads((tmp_path / "b" / "build.json").read_text())
    assert build["sources"]["doc"]["archive_sha256"] == pinned["sources"]["doc"]["archive_sha256"]

    wrong = json.loads(manifest.read_text())
    wrong["sources"]["code"]["sha256"] = "0" * 64
    manifest.write_text(json.dumps(wrong))
    with pytest.raises(SystemExit, match="code: rebuilt text has sha256 .* manifest says 0000") as err:
        corpus.main(base + ["--out", str(tmp_path / "c")])
    assert "--from-shared" not in str(err.value)  # no verified copies exist of the Debian sources
    wrong = json.loads(json.dumps(pinned))
    wrong["sources"]["doc"]["archive_sha256"] = "f" * 64
    manifest.write_text(json.dumps(wrong))
    with pytest.raises(SystemExit, match=r"doc: fake-doc_1.0-1_all.deb has sha256 .* manifest says ffff"):
        corpus.main(base + ["--out", str(tmp_path / "c")])
    del wrong["sources"]["doc"]
    manifest.write_text(json.dumps(wrong))
    with pytest.raises(SystemExit, match="doc is not in .*--update-manifest"):
        corpus.main(base + ["--out", str(tmp_path / "c")])


def test_a_version_gone_from_the_archive_is_a_clear_error(tmp_path, monkeypatch):
    def apt(cmd, **kw):
        assert cmd == ["apt-get", "download", "fake-doc=0.9-1"]
        return subprocess.CompletedProcess(cmd, 100, "", "E: Version '0.9-1' for 'fake-doc' was not found\n")

    monkeypatch.setattr(corpus.subprocess, "run", apt)
    with pytest.raises(OSError, match="not in the archive .*--update-manifest"):
        corpus.fetch(corpus.Package("debian", "fake-doc", "0.9-1"), tmp_path)


def test_candidate_version_parses_apt_cache_policy(monkeypatch):
    out = "perl-doc:\n  Installed: (none)\n  Candidate: 5.36.0-7+deb12u4\n  Version table:\n"
    monkeypatch.setattr(corpus.subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(cmd, 0, out, ""))
    assert corpus.candidate_version("perl-doc") == "5.36.0-7+deb12u4"
    none = out.replace("5.36.0-7+deb12u4", "(none)")
    monkeypatch.setattr(corpus.subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(cmd, 0, none, ""))
    with pytest.raises(OSError, match="no candidate"):
        corpus.candidate_version("perl-doc")


# --- tokenizing in pieces ------------------------------------------------------------------------------------
def test_pieces_encode_like_the_whole_document():
    text = "".join(f"Line {i} of text.\nMore words.\n\nclass C{i}:\n    def f(self, x):\n        return x * {i}\n\n\n"
                   f"  \nWord {i}, word.\n" for i in range(300))
    tj = bpe.train_tokenizer([text], 400)
    parts = tokenize_corpus.pieces(text, 500)
    assert "".join(parts) == text and len(parts) > 10
    assert all(p[-1] == "\n" and not p[-2].isspace() and not parts[k + 1][0].isspace()
               for k, p in enumerate(parts[:-1]))
    counts: list[int] = []
    whole = tokenize_corpus.encode_documents(tj, [text, "tail"], piece_chars=10**9)
    cut = tokenize_corpus.encode_documents(tj, [text, "tail"], piece_chars=500, counts=counts)
    assert np.array_equal(whole, cut) and cut.dtype == np.uint16
    assert counts[0] + counts[1] + 2 == cut.size and cut[counts[0]] == 0 and cut[-1] == 0
