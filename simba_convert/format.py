"""The saved format: `config.json["simba"]`, the section a sparsified checkpoint carries.

This module is its only reader and writer. Format 2 (written now) stores the pruning spec once, at the top
level, and the provenance of the conversion apart:

    {"format_version": 2, "architecture": "mamba1",
     "keep_ratios": [...], "criterion": "last", "protect": 64, "signed": false, "floor": 0.05,
     "budget": 0.6, "schedule": "calibrated", "achieved_flops_ratio": ..., "backbone_flops_ratio": ...,
     "flops_reference": {"seq_len": 512},
     "calibration": {"source": ..., "samples": 32, "seq_len": 512, "kl": ...},
     "provenance": {"tool_version": "0.1.0", "git_commit": null, "calibration_fingerprint": "…",
                    "seed": 0, "torch_version": "2.x"},
     "finetune": {...}}                      (only when a fine-tune ran)

`architecture` ("mamba1" | "mamba2" | "falcon_mamba", `simba_convert.arch`) names the model the spec was calibrated
for; the loader refuses a section whose architecture differs from the one config.json describes. Sections written
before it was recorded (and format 0 and 1, all Mamba-1) read as None: not recorded, config.json alone decides.

Older layouts are read and converted (`from_dict`): format 1 (the spec twice, under "spec" and at the top
level; the "spec" copy is the one the loader always used) and the unversioned bare spec ({"keep_ratios": …}
or {"spec": {…}}). A newer format_version or an unknown key is a one-line CheckpointError.

The rest of config.json is marked so that transformers cannot take a sparsified checkpoint for the dense model
(which it would run dense, ignoring the section): `mark` sets `model_type` "simba", `architectures`
["SimbaForCausalLM"] and an `auto_map` naming the two files written beside the weights (io/hf_remote/:
transformers loads them only with trust_remote_code=True, and they run the model pruned through simba-convert),
and keeps the entries it replaced under "simba_base_config" ({"model_type": "mamba", "architectures": [...]}
for the transformers layout; {} for mamba_ssm's, which has neither). `base_config` undoes it exactly: what the
architecture and layout are read from. Checkpoints written before the marking (model_type "mamba" etc. or the
mamba_ssm fields, plus a section) are read as they are.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, fields

from .arch import ARCHITECTURES
from .errors import CheckpointError, SimbaError
from .pruning.spec import PruningSpec

FORMAT_VERSION = 2
SECTION = "simba"  # the key of config.json

_SPEC_KEYS = ("keep_ratios", "criterion", "protect", "signed", "floor")  # stored at the top level (seed: provenance)
_V0_SPEC_KEYS = frozenset(_SPEC_KEYS) | {"seed", "version"}  # PruningSpec.to_dict of format 0 and 1
_V1_KEYS = frozenset({"format_version", "spec", "budget", "achieved_flops_ratio", "backbone_flops_ratio",
                      "flops_reference", "keep_ratios", "criterion", "protect", "schedule", "calibration",
                      "versions", "finetune"})


def _fail(msg: str):
    raise CheckpointError(f"'simba' section: {msg}")


def _check_keys(d, known, where: str) -> dict:
    if not isinstance(d, dict):
        _fail(f"{where} is not an object")
    unknown = sorted(set(d) - set(known))
    if unknown:
        _fail(f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} in {where} "
              f"(written by another version of simba-convert?)")
    return d


def _typed(value, types, name: str, allow_none: bool = True):
    """`value` when it is one of `types` (bool is never a number here), else a CheckpointError."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) and bool not in types or not isinstance(value, types):
        _fail(f"{name} has the wrong type ({type(value).__name__}: {value!r})")
    return value


_NUM = (int, float)


@dataclass(frozen=True)
class Calibration:
    """The calibration data the keep ratios were fitted on (its fingerprint is in Provenance)."""

    source: str | None = None  # the bundled file's name, a path or a dataset
    samples: int | None = None
    seq_len: int | None = None
    kl: float | None = None  # calibration KL of the chosen ratios

    def __post_init__(self):
        _typed(self.source, (str,), "calibration.source")
        _typed(self.samples, (int,), "calibration.samples")
        _typed(self.seq_len, (int,), "calibration.seq_len")
        _typed(self.kl, _NUM, "calibration.kl")


@dataclass(frozen=True)
class Provenance:
    """What made the checkpoint. None: not known (e.g. converted from a section written before format 2)."""

    tool_version: str | None = None  # simba_convert.__version__
    git_commit: str | None = None  # of the simba-convert source tree, when it ran from a git checkout
    calibration_fingerprint: str | None = None  # sha256 prefix of the calibration token windows
    seed: int = 0  # of the calibration windows, the search and the `random` criterion (the spec's seed)
    torch_version: str | None = None

    def __post_init__(self):
        for name in ("tool_version", "git_commit", "calibration_fingerprint", "torch_version"):
            _typed(getattr(self, name), (str,), f"provenance.{name}")
        _typed(self.seed, (int,), "provenance.seed", allow_none=False)


@dataclass(frozen=True)
class Finetune:
    """The fine-tune's outcome; `applied` is False when it made the calibration KL worse and was discarded."""

    applied: bool
    steps: int
    lr: float
    trainable: str
    kl_before: float
    kl_after: float

    def __post_init__(self):
        _typed(self.applied, (bool,), "finetune.applied", allow_none=False)
        _typed(self.steps, (int,), "finetune.steps", allow_none=False)
        _typed(self.lr, _NUM, "finetune.lr", allow_none=False)
        _typed(self.trainable, (str,), "finetune.trainable", allow_none=False)
        _typed(self.kl_before, _NUM, "finetune.kl_before", allow_none=False)
        _typed(self.kl_after, _NUM, "finetune.kl_after", allow_none=False)


@dataclass(frozen=True)
class SimbaSection:
    """`config.json["simba"]`: the pruning spec (one copy), what it was chosen for, and where it came from."""

    spec: PruningSpec
    provenance: Provenance
    budget: float | None = None  # the FLOPs budget asked for
    schedule: str | None = None
    achieved_flops_ratio: float | None = None
    backbone_flops_ratio: float | None = None
    flops_seq_len: int | None = None  # the L the FLOPs ratios are measured at (with the spec's protect)
    calibration: Calibration = Calibration()
    finetune: Finetune | None = None
    architecture: str | None = None  # of the model it was made for; None: not recorded
    format_version: int = FORMAT_VERSION

    def __post_init__(self):
        if self.format_version != FORMAT_VERSION:
            _fail(f"format_version {self.format_version} cannot be written (this tool writes {FORMAT_VERSION})")
        if self.provenance.seed != self.spec.seed:
            _fail(f"provenance.seed {self.provenance.seed} differs from the pruning spec's seed {self.spec.seed}")
        for name in ("budget", "achieved_flops_ratio", "backbone_flops_ratio"):
            _typed(getattr(self, name), _NUM, name)
        _typed(self.schedule, (str,), "schedule")
        _typed(self.flops_seq_len, (int,), "flops_reference.seq_len")
        if self.architecture is not None and self.architecture not in ARCHITECTURES:
            _fail(f"architecture {self.architecture!r} is not one of {', '.join(ARCHITECTURES)}")

    def to_dict(self) -> dict:
        spec = self.spec.to_dict()
        arch = {} if self.architecture is None else {"architecture": self.architecture}
        d = {"format_version": self.format_version, **arch, **{k: spec[k] for k in _SPEC_KEYS},
             "budget": self.budget, "schedule": self.schedule,
             "achieved_flops_ratio": self.achieved_flops_ratio, "backbone_flops_ratio": self.backbone_flops_ratio,
             "flops_reference": {"seq_len": self.flops_seq_len},
             "calibration": _fields(self.calibration), "provenance": _fields(self.provenance)}
        if self.finetune is not None:
            d["finetune"] = _fields(self.finetune)
        return d

    @classmethod
    def from_dict(cls, d) -> "SimbaSection":
        """Read a section of any format this tool knows (older ones converted); a CheckpointError otherwise."""
        if not isinstance(d, dict):
            _fail("not an object")
        v = d.get("format_version", 0)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            _fail(f"format_version must be a non-negative integer, got {v!r}")
        if v > FORMAT_VERSION:
            from ._version import __version__

            _fail(f"format_version {v} is newer than this simba-convert ({__version__}) reads ({FORMAT_VERSION}); "
                  "upgrade simba-convert")
        try:
            return (_from_v0, _from_v1, _from_v2)[v](d)
        except CheckpointError:
            raise
        except (SimbaError, TypeError, ValueError) as e:  # PruningSpec's checks, a wrongly typed value
            _fail(str(e).splitlines()[0] if str(e) else type(e).__name__)


def _fields(obj) -> dict:
    return {f.name: getattr(obj, f.name) for f in fields(obj)}


def _spec(d: dict, seed) -> PruningSpec:
    ratios = _typed(d.get("keep_ratios"), (list, tuple), "keep_ratios", allow_none=False)
    kw = {k: d[k] for k in _SPEC_KEYS[1:] if k in d}
    return PruningSpec(tuple(ratios), seed=_typed(seed, (int,), "seed", allow_none=False), **kw)


def _from_v2(d: dict) -> SimbaSection:
    _check_keys(d, {"format_version", "architecture", *_SPEC_KEYS, "budget", "schedule", "achieved_flops_ratio",
                    "backbone_flops_ratio", "flops_reference", "calibration", "provenance", "finetune"}, "the section")
    prov = Provenance(**_check_keys(d.get("provenance", {}), {f.name for f in fields(Provenance)}, "provenance"))
    cal = Calibration(**_check_keys(d.get("calibration", {}), {f.name for f in fields(Calibration)}, "calibration"))
    ref = _check_keys(d.get("flops_reference", {}), {"seq_len"}, "flops_reference")
    ft = d.get("finetune")
    if ft is not None:
        names = {f.name for f in fields(Finetune)}
        missing = sorted(names - set(_check_keys(ft, names, "finetune")))
        if missing:
            _fail(f"finetune lacks {', '.join(missing)}")
        ft = Finetune(**ft)
    return SimbaSection(_spec(d, prov.seed), prov, d.get("budget"), d.get("schedule"), d.get("achieved_flops_ratio"),
                        d.get("backbone_flops_ratio"), ref.get("seq_len"), cal, ft,
                        _typed(d.get("architecture"), (str,), "architecture"))


def _from_v1(d: dict) -> SimbaSection:
    """Format 1 (simba-convert 0.1.0): the spec under "spec" (authoritative, what the loader read) and again
    at the top level; seed and fingerprint under "calibration"; {"simba_convert", "torch"} under "versions"."""
    _check_keys(d, _V1_KEYS, "the section")
    spec_d = _check_keys(d.get("spec"), _V0_SPEC_KEYS, "spec")
    cal = dict(_check_keys(d.get("calibration", {}), {"fingerprint", "source", "samples", "seq_len", "seed", "kl"},
                           "calibration"))
    versions = _check_keys(d.get("versions", {}), {"simba_convert", "torch"}, "versions")
    ref = _check_keys(d.get("flops_reference", {}), {"seq_len", "protect"}, "flops_reference")
    seed = spec_d.get("seed", cal.get("seed", 0))
    prov = Provenance(versions.get("simba_convert"), None, cal.pop("fingerprint", None), seed, versions.get("torch"))
    cal.pop("seed", None)
    ft = d.get("finetune")
    return SimbaSection(_spec(spec_d, seed), prov, d.get("budget"), d.get("schedule"), d.get("achieved_flops_ratio"),
                        d.get("backbone_flops_ratio"), ref.get("seq_len"), Calibration(**cal),
                        None if ft is None else Finetune(**_check_keys(ft, {f.name for f in fields(Finetune)},
                                                                        "finetune")))


def _from_v0(d: dict) -> SimbaSection:
    """Unversioned: a bare PruningSpec dict, or one under "spec" (what pruning.model read before format 1)."""
    if "spec" in d:
        _check_keys(d, {"spec"}, "the section")
        d = d["spec"]
    spec_d = _check_keys(d, _V0_SPEC_KEYS, "the section")
    seed = spec_d.get("seed", 0)
    return SimbaSection(_spec(spec_d, seed), Provenance(seed=seed))


def read(raw_config: dict, where) -> SimbaSection | None:
    """The section of a checkpoint's parsed config.json (None when it has none, i.e. dense); `where` names the
    file in the one-line CheckpointError of an unreadable section."""
    if SECTION not in raw_config:
        return None
    try:
        return SimbaSection.from_dict(raw_config[SECTION])
    except CheckpointError as e:
        raise CheckpointError(f"{where}: invalid {e}") from None


def with_section(raw_config: dict, section: SimbaSection) -> dict:
    """`raw_config` (a dense config.json, or a fragment merged into one later) with `section` as its `simba` entry,
    marked for transformers (`mark`); a section it already had is replaced."""
    return mark({**base_config(raw_config), SECTION: section.to_dict()})


MODEL_TYPE = "simba"  # config.json["model_type"] of a sparsified checkpoint
BASE = "simba_base_config"  # the dense config.json's entries that `mark` replaced
REMOTE_CLASSES = {"AutoConfig": "configuration_simba.SimbaConfig",
                  "AutoModelForCausalLM": "modeling_simba.SimbaForCausalLM"}
_MARK_KEYS = ("model_type", "architectures", "auto_map")


def is_marked(raw_config: dict) -> bool:
    return isinstance(raw_config, dict) and raw_config.get("model_type") == MODEL_TYPE


def mark(raw_config: dict) -> dict:
    """A config.json holding a `simba` section, marked as sparsified (model_type "simba" + auto_map to the remote
    code files, the replaced entries kept under "simba_base_config"); a dense one (no section) is returned as is."""
    if SECTION not in raw_config or is_marked(raw_config):
        return raw_config
    out = {k: v for k, v in raw_config.items() if k not in _MARK_KEYS}
    return {"model_type": MODEL_TYPE, "architectures": ["SimbaForCausalLM"], "auto_map": dict(REMOTE_CLASSES),
            **out, BASE: {k: raw_config[k] for k in _MARK_KEYS if k in raw_config}}


def base_config(raw_config, where="config.json"):
    """The config.json of the dense model behind a marked sparsified one (`mark` undone; the section kept), which
    the architecture and layout are read from; anything else is returned as is. A marked config without its
    section or its "simba_base_config" is a one-line CheckpointError naming `where`."""
    if not is_marked(raw_config):
        return raw_config
    base = raw_config.get(BASE)
    if SECTION not in raw_config or not isinstance(base, dict):
        missing = "its 'simba' section" if SECTION not in raw_config else f"a valid {BASE!r} entry"
        raise CheckpointError(f"{where}: model_type {MODEL_TYPE!r} (a sparsified checkpoint) without {missing}")
    unknown = sorted(set(base) - set(_MARK_KEYS))
    if unknown:
        raise CheckpointError(f"{where}: unknown key {unknown[0]!r} in {BASE!r} (written by another version of "
                              "simba-convert?)")
    out = {k: v for k, v in raw_config.items() if k not in (*_MARK_KEYS, BASE)}
    return {**base, **out}


def to_json(section: SimbaSection) -> str:
    """The section as one JSON string (e.g. the "simba" metadata entry of an exported ONNX file)."""
    import json

    return json.dumps(section.to_dict(), sort_keys=True)


def from_json(text: str) -> SimbaSection:
    import json

    try:
        d = json.loads(text)
    except (json.JSONDecodeError, TypeError) as e:
        _fail(f"not JSON ({e})")
    return SimbaSection.from_dict(d)


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the git checkout this package runs from, or None (an installed wheel, no git, any error)."""
    import subprocess
    from pathlib import Path

    here = Path(__file__).resolve().parent
    try:
        top = subprocess.run(["git", "-C", str(here), "rev-parse", "--show-toplevel", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=True).stdout.split()
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    # only this package's own repository: not one that merely contains an installed copy in a virtualenv
    if len(top) != 2 or Path(top[0]).resolve() / "simba_convert" != here:
        return None
    return top[1] if len(top[1]) == 40 and all(c in "0123456789abcdef" for c in top[1]) else None


def provenance(*, calibration_fingerprint: str | None, seed: int, torch_version: str | None = None) -> Provenance:
    """The provenance of a conversion run now, by this tool."""
    from ._version import __version__

    return Provenance(__version__, git_commit(), calibration_fingerprint, seed, torch_version)

