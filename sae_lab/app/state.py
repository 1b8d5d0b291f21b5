"""What every page shares: the workspace from the command line, cached resources, the URL state, error display.

The URL is the state: ``?run=<run>&sae=<sae>&feature=<i>`` names what a page shows, so any view can be shared
as a link. Widgets write the URL in their callbacks; pages read it. Names in the URL are resolved by
``sae_lab.workspace.Workspace``, which refuses paths outside the directories the dashboard was opened on.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import streamlit as st

from sae_lab.configbase import ConfigError
from sae_lab.evaluation.feature_db import FeatureDB, FeatureDBError
from sae_lab.models import ModelLoadError
from sae_lab.rundir import RunDirError
from sae_lab.saeref import SAERef
from sae_lab.workspace import Workspace, WorkspaceError

# Errors that bad input produces: shown as a message, never as a traceback.
USER_ERRORS = (
    WorkspaceError,
    FeatureDBError,
    ConfigError,
    RunDirError,
    ModelLoadError,
    IndexError,
    ValueError,
    OSError,
)
FEATURES_PAGE = "features"


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="sae-lab dashboard")
    p.add_argument("targets", nargs="*")
    p.add_argument("--model", default=None)
    p.add_argument("--device", default="auto")
    return p.parse_args(argv)


def args() -> argparse.Namespace:
    return parse_args(sys.argv[1:])


@st.cache_resource(show_spinner=False)
def _workspace(targets: tuple[str, ...]) -> Workspace:
    return Workspace(list(targets))


def workspace() -> Workspace:
    """The workspace of the command line (stops the page with a message when it is unusable)."""
    a = args()
    if not a.targets:
        st.error("No directories given. Start the dashboard with `sae-lab dashboard RUN_DIR_OR_SAE_DIR [...]`.")
        st.stop()
    try:
        return _workspace(tuple(a.targets))
    except WorkspaceError as e:
        st.error(str(e))
        st.stop()


@st.cache_resource(show_spinner="Opening the feature database…", max_entries=16)
def _feature_db(path: str, mtime: float) -> FeatureDB:
    return FeatureDB(path)


def feature_db(entry: SAERef) -> FeatureDB:
    """The entry's feature database, opened once per file version (FeatureDBError if missing or damaged)."""
    path = entry.db_path
    if not path.is_file():
        raise FeatureDBError(
            f"SAE '{entry.key}' has no feature database yet ({path}); build it with "
            f"`sae-lab analyze {entry.run_dir or entry.sae_dir}`"
        )
    return _feature_db(str(path), path.stat().st_mtime)


@st.cache_resource(show_spinner="Loading the SAE…", max_entries=16)
def _sae(sae_dir: str, device: str):
    from sae_lab.models import resolve_device
    from sae_lab.saedir import SAEDir

    return SAEDir(sae_dir).load().eval().to(resolve_device(device))


def sae(entry: SAERef):
    return _sae(str(entry.sae_dir), args().device)


@st.cache_resource(show_spinner="Loading the model (once per session of the server)…", max_entries=2)
def _model(name: str, device: str):
    from sae_lab.models import load_model

    return load_model(name, device)


@st.cache_resource(show_spinner="Checking the SAE against the model…", max_entries=16)
def _checked(sae_dir: str, model_name: str, device: str) -> bool:
    from sae_lab.evaluation.inputs import check_targets

    check_targets([SAERef(Path(sae_dir).name, _sae(sae_dir, device), sae_dir)], _model(model_name, device))
    return True


def model_and_sae(entry: SAERef):
    """(model, sae) for an entry, the SAE checked against the model (SAEMismatchError names both)."""
    a = args()
    name = workspace().model_name(entry, a.model)
    _checked(str(entry.sae_dir), name, a.device)
    return _model(name, a.device), sae(entry)


# ---- the URL --------------------------------------------------------------------------------------------


def feature_url(entry: SAERef, feature: int) -> str:
    """A relative link that opens ``feature`` of ``entry`` in the feature browser."""
    from urllib.parse import urlencode

    return f"./{FEATURES_PAGE}?" + urlencode({"run": entry.run, "sae": entry.name, "feature": int(feature)})


def _on_sae_change(key: str) -> None:
    e = {x.key: x for x in workspace().entries()}[st.session_state[key]]
    st.query_params["run"], st.query_params["sae"] = e.run, e.name
    st.query_params.pop("feature", None)


def select_sae(label: str = "SAE", key: str = "sae_choice", entries: list[SAERef] | None = None, where=None) -> SAERef:
    """A selectbox of the workspace's SAEs, synced with ``?run=&sae=`` (a bad URL stops with a message)."""
    ws = workspace()
    entries = entries if entries is not None else ws.entries()
    if not entries:
        st.error("None of the given directories holds a trained SAE yet.")
        st.stop()
    qp = st.query_params
    try:
        current = ws.entry(qp["run"], qp.get("sae")) if "run" in qp else entries[0]
    except WorkspaceError as e:
        st.error(f"The link names an SAE this dashboard cannot open: {e}")
        st.stop()
    keys = [e.key for e in entries]
    if current.key not in keys:
        current = entries[0]
    st.session_state[key] = current.key
    (where or st.sidebar).selectbox(label, keys, key=key, on_change=_on_sae_change, args=(key,))
    qp["run"], qp["sae"] = current.run, current.name
    return current


@contextlib.contextmanager
def user_errors():
    """Show the errors bad input produces as messages (the page goes on below)."""
    try:
        yield
    except USER_ERRORS as e:
        st.error(str(e))


def query_int(name: str) -> int | None:
    """An integer URL parameter (None if absent or not an integer)."""
    try:
        return int(st.query_params[name]) if name in st.query_params else None
    except ValueError:
        return None
