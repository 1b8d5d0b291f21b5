"""The dashboard smoke test run by an installed sae-lab (``tests/test_package.py`` runs it with a fresh venv's Python).

Saves a small SAE directory, builds the command `sae-lab dashboard DIR` would run, checks that its app is the
installed package's, and runs that app's entry file under Streamlit's AppTest: the Runs page lists the SAE.
Prints one JSON line: where sae_lab and the app were imported from, and what the page showed.

    python tests/installed_smoke.py WORK_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import sae_lab
from sae_lab.dashboard import dashboard_command
from sae_lab.saedir import SAEDir
from sae_lab.saes import SAEConfig, build_sae


def main(work: Path) -> dict:
    from streamlit.testing.v1 import AppTest

    cfg = SAEConfig(
        architecture="topk", d_in=16, d_sae=32, k=4, hook_name="blocks.0.hook_resid_post", name="smoke_topk"
    )
    sae_dir = SAEDir(work / "smoke_topk").save(build_sae(cfg))
    cmd, _, _ = dashboard_command([str(sae_dir)], device="cpu")
    app = Path(cmd[cmd.index("run") + 1])
    sys.argv = ["main.py", *cmd[cmd.index("--") + 1 :]]  # what Streamlit hands the app after `--`
    at = AppTest.from_file(str(app), default_timeout=120).run()
    table = at.dataframe[0].value if at.dataframe else None
    return {
        "sae_lab": sae_lab.__file__,
        "app": str(app),
        "exceptions": [e.value for e in at.exception],
        "errors": [e.value for e in at.error],
        "title": [t.value for t in at.title],
        "saes": sorted(table["sae"]) if table is not None else [],
    }


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]))))
