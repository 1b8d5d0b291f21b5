"""The SAEs a target names: one resolver for eval, analyze, the CLI, ``sae_lab.load_sae`` and the dashboard.

A target is a path the user gives; :func:`target_kind` says what it is and :func:`resolve_saes` lists its SAEs:

- ``"sae_dir"``: an SAE directory (:meth:`sae_lab.saedir.SAEDir.is_sae_dir`, ours or SAELens's) -> that SAE;
- ``"run"``: a run directory (:class:`sae_lab.rundir.RunDir`: config.yaml or saes/) -> every SAE directory under
  its saes/, sorted by name.

Each SAE is an :class:`SAERef`: its name, its directory (where eval.json and features.sqlite go), its run, and the
SAE itself, loaded on first use. A new kind of target (e.g. a pretrained release name with an SAE id, whose
files a download cache holds) is one more branch in each of the two functions, returning SAERefs whose
``sae_dir`` is where its files are; everything downstream works unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from sae_lab.configbase import ConfigError
from sae_lab.fileio import path_problem
from sae_lab.rundir import RunDir, RunDirError
from sae_lab.saedir import CFG, WEIGHTS, SAEDir

if TYPE_CHECKING:
    from sae_lab.saes.base import BaseSAE

TargetKind = Literal["sae_dir", "run"]


class TargetError(ConfigError):
    """A target that names no SAE: missing, or neither a run directory nor an SAE directory."""


class SAERef:
    """One SAE to evaluate, analyse or show: ``name``, the directory its files live in (``sae_dir``; None for an SAE
    only in memory), the run directory it belongs to (``run_dir``; None for a standalone SAE directory) and the
    label the dashboard shows for that run (``run``). ``sae`` is the SAE, given or loaded from ``sae_dir`` (in
    eval mode, on CPU) on first use."""

    def __init__(
        self,
        name: str,
        sae: BaseSAE | None = None,
        sae_dir: str | Path | None = None,
        run_dir: str | Path | None = None,
        run: str = "",
    ):
        self.name, self.run = name, run
        self.sae_dir = Path(sae_dir) if sae_dir is not None else None
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self._sae = sae

    def _identity(self) -> tuple:
        return self.name, self.sae_dir, self.run_dir, self.run

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SAERef) and self._identity() == other._identity() and self._sae is other._sae

    def __hash__(self) -> int:
        return hash(self._identity())

    def __repr__(self) -> str:
        return f"SAERef({self.name!r}, sae_dir={str(self.sae_dir) if self.sae_dir else None!r}, run={self.run!r})"

    @property
    def sae(self) -> BaseSAE:
        return self.load()

    def load(self) -> BaseSAE:
        """The SAE: loaded from ``sae_dir`` on the first call (SAEFileError/ConfigError naming what is wrong)."""
        if self._sae is None:
            self._sae = self.dir.load().eval()
        return self._sae

    @property
    def dir(self) -> SAEDir:
        if self.sae_dir is None:
            raise ValueError(f"SAE '{self.name}' has no directory (it exists only in memory)")
        return SAEDir(self.sae_dir)

    @property
    def hook(self) -> str:
        return self.sae.cfg.hook_name

    @property
    def key(self) -> str:
        """``run/name``: unique within a workspace."""
        return f"{self.run}/{self.name}"

    @property
    def eval_path(self) -> Path:
        return self.dir.eval_path

    @property
    def db_path(self) -> Path:
        return self.dir.feature_db_path

    def eval_record(self) -> dict | None:
        """The SAE's eval.json (None before `sae-lab eval`)."""
        return self.dir.read_eval()


def target_kind(target: str | Path) -> TargetKind | None:
    """What ``target`` is: an SAE directory, a run directory, or None (neither)."""
    p = Path(target)
    if SAEDir(p).is_sae_dir():
        return "sae_dir"
    run = RunDir(p)
    if run.is_run() or run.saes_dir.is_dir():
        return "run"
    return None


def resolve_saes(target: str | Path, label: str | None = None) -> list[SAERef]:
    """The SAEs ``target`` names (not loaded yet), their run labelled ``label`` (default: the directory's name);
    TargetError when it names none."""
    p = Path(target)
    kind, label = target_kind(p), label if label is not None else p.name
    if kind == "sae_dir":
        return [SAERef(p.name, sae_dir=p, run=label)]
    if kind == "run":
        run = RunDir(p)
        dirs = [SAEDir(run.sae_dir(n)) for n in run.sae_names()]
        return [SAERef(d.name, sae_dir=d.path, run_dir=p, run=label) for d in dirs if d.is_sae_dir()]
    raise TargetError(not_a_target(p))


def resolve_one(target: str | Path) -> SAERef:
    """The one SAE ``target`` names: an SAE directory, or the only SAE of a run directory (RunDirError when the run
    holds none or several). A path that is neither fails as :meth:`SAEDir.load` explains it."""
    p = Path(target)
    if target_kind(p) != "run":
        return SAERef(p.name, sae_dir=p)  # loading it names what is wrong (missing, a file, no weights)
    refs = resolve_saes(p)
    if len(refs) != 1:
        what = f"SAEs {[r.name for r in refs]}" if refs else "no trained SAE"
        raise RunDirError(f"run directory '{p}' holds {what}; pass '{RunDir(p).saes_dir}/<name>' to choose one")
    return refs[0]


def not_a_target(p: Path) -> str:
    """Why ``p`` names no SAE, in words."""
    run, sae = "a run directory (with config.yaml and saes/)", f"an SAE directory (with {CFG} and {WEIGHTS})"
    problem = path_problem(p)
    if problem is not None:
        return f"'{p}' {problem}; pass {run} or {sae}"
    return f"'{p}' is neither {run} nor {sae}"
