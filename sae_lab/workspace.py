"""A workspace: the run directories and SAE directories a user opened (in the dashboard), and nothing else.

``Workspace(["runs/a", "runs/b", "saes/gpt2_l6"])`` lists every SAE they hold (``entries()``), a table of their
architectures and eval metrics (``table()``), their training curves (``curves()``), and resolves the names a
URL carries (``entry(run, sae)``). A run named by a path must be one of the given directories: any other path,
e.g. ``../../etc``, raises ``WorkspaceError``, so a shared link can never make the app read elsewhere.
What each directory holds is decided by ``sae_lab.saeref`` (the resolver eval and analyze use too); runs are read
only through ``sae_lab.rundir.RunDir``.
"""

from __future__ import annotations

from pathlib import Path

from sae_lab.rundir import RunDir, RunDirError
from sae_lab.saeref import SAERef, not_a_target, resolve_saes, target_kind

TABLE_METRICS = (
    "fvu",
    "l0_mean",
    "dead_fraction",
    "dense_fraction",
    "loss_recovered_zero",
    "loss_recovered_mean",
    "kl_sae",
    "cos",
)
CURVE_METRICS = ("loss", "fvu", "l0", "dead_frac")


class WorkspaceError(ValueError):
    """A target or a name that is not in the workspace; the message says what was given and what exists."""


class Workspace:
    """The SAEs of the given run directories and SAE directories (each checked on construction)."""

    def __init__(self, targets: list[str | Path]):
        if not targets:
            raise WorkspaceError("give at least one run directory or SAE directory")
        self.roots: dict[str, Path] = {}
        for t in targets:
            p = Path(t).expanduser().resolve()
            if target_kind(p) is None:
                raise WorkspaceError(not_a_target(Path(t)))
            label, n = p.name, 2
            while label in self.roots:
                label, n = f"{p.name}~{n}", n + 1
            self.roots[label] = p

    def _entries_of(self, label: str, root: Path) -> list[SAERef]:
        return resolve_saes(root, label)

    def entries(self) -> list[SAERef]:
        """Every SAE in the workspace, runs in the order given, SAEs sorted by name."""
        return [e for label, root in self.roots.items() for e in self._entries_of(label, root)]

    def run_label(self, run: str) -> str:
        """The label of a run given by label or by path; a path outside the workspace is refused."""
        if run in self.roots:
            return run
        if "/" in run or run.startswith("."):
            p = Path(run).expanduser().resolve()
            for label, root in self.roots.items():
                if p == root:
                    return label
            raise WorkspaceError(
                f"'{run}' is outside the directories this dashboard was opened on; "
                f"open it with `sae-lab dashboard {run}` to browse it"
            )
        raise WorkspaceError(f"no run named '{run}' here; the runs are: {', '.join(self.roots)}")

    def entry(self, run: str, sae: str | None = None) -> SAERef:
        """The SAE ``sae`` of run ``run`` (label or path); the run's only SAE when ``sae`` is None."""
        label = self.run_label(run)
        entries = self._entries_of(label, self.roots[label])
        if not entries:
            raise WorkspaceError(f"run '{label}' holds no trained SAE yet (has training finished?)")
        if sae is None:
            return entries[0]
        for e in entries:
            if e.name == sae:
                return e
        raise WorkspaceError(f"run '{label}' has no SAE named '{sae}'; it has: {', '.join(e.name for e in entries)}")

    def model_name(self, entry: SAERef, default: str | None = None) -> str:
        """The model an SAE belongs to: its run's ``model.name``, else the model its cfg.json records (a different
        ``default`` is an error: ``pretrained.model_for``), else ``default``, else the embedded model."""
        if entry.run_dir is not None:
            name = (RunDir(entry.run_dir).read_config().get("model") or {}).get("name")
            if name:
                return str(name)
        from sae_lab.pretrained.model_names import model_for

        return model_for(entry.sae_dir, default)

    def table(self, sae_info=None) -> list[dict]:
        """One row per SAE: run, name, architecture, hook, d_in, d_sae, k, headline eval metrics, database present.

        Architecture and sizes come from eval.json, else from ``sae_info(entry) -> dict`` (e.g. the loaded config)."""
        rows = []
        for e in self.entries():
            rec = e.eval_record() or {}
            info = {k: rec.get(k) for k in ("architecture", "hook_name", "d_in", "d_sae", "k")}
            if info["architecture"] is None and sae_info is not None:
                info.update(sae_info(e))
            metrics = rec.get("metrics") or {}
            rows.append(
                {
                    "run": e.run,
                    "sae": e.name,
                    **info,
                    **{m: metrics.get(m) for m in TABLE_METRICS},
                    "feature_db": e.db_path.is_file(),
                }
            )
        return rows

    def curves(self) -> list[dict]:
        """Training-curve points of every SAE of every run: {run, sae, tokens, loss, fvu, l0, dead_frac}."""
        out = []
        for label, root in self.roots.items():
            if target_kind(root) != "run":
                continue
            try:
                records = RunDir(root).metrics()
            except RunDirError:
                continue
            for r in records:
                if "sae" in r and "tokens" in r:
                    out.append(
                        {"run": label, "sae": r["sae"], "tokens": r["tokens"], **{m: r.get(m) for m in CURVE_METRICS}}
                    )
        return out
