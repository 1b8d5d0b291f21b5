"""The sae-lab dashboard: `sae-lab dashboard RUN_DIR_OR_SAE_DIR [...]` runs `streamlit run .../app/main.py -- ...`.

Pages (views/): Runs, Feature browser, Prompt explorer, Ablate and steer, Compare dictionaries. Every number
they show is a call into `sae_lab`; this folder holds views only.
"""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # `import state` from the pages, also under AppTest
    sys.path.insert(0, str(HERE))

st.set_page_config(page_title="sae-lab", page_icon="🔬", layout="wide")

PAGES = [
    st.Page(HERE / "views" / "runs.py", title="Runs", url_path="runs", default=True),
    st.Page(HERE / "views" / "features.py", title="Feature browser", url_path="features"),
    st.Page(HERE / "views" / "prompt.py", title="Prompt explorer", url_path="prompt"),
    st.Page(HERE / "views" / "intervene.py", title="Ablate and steer", url_path="intervene"),
    st.Page(HERE / "views" / "compare.py", title="Compare dictionaries", url_path="compare"),
]
st.navigation(PAGES).run()
