"""Compare dictionaries: match two SAEs' features one-to-one by decoder cosine (Hungarian algorithm)."""

import pandas as pd
import plotly.express as px
import state
import streamlit as st

from sae_lab.evaluation.compare import match_dictionaries

st.title("Compare dictionaries")
ws = state.workspace()
entries = {e.key: e for e in ws.entries()}
keys = list(entries)
if len(keys) < 2:
    st.info("Open the dashboard on at least two SAEs (e.g. a run with several, or two runs) to compare them.")
    st.stop()

a_col, b_col = st.columns(2)
key_a = a_col.selectbox("Dictionary A", keys, index=0, key="cmp_a")
key_b = b_col.selectbox("Dictionary B", keys, index=1, key="cmp_b")
threshold = st.slider("Match threshold (decoder cosine)", 0.0, 1.0, 0.7, 0.05, key="cmp_threshold")


@st.cache_data(show_spinner=False, max_entries=8)
def _match(sae_dir_a: str, sae_dir_b: str, _a, _b):
    m = match_dictionaries(_a, _b)
    return m


with state.user_errors():
    ea, eb = entries[key_a], entries[key_b]
    if key_a == key_b:
        st.warning("Dictionary A and B are the same SAE: every feature matches itself.")
    with st.spinner("Matching features (Hungarian algorithm on decoder cosines)…"):
        m = _match(str(ea.sae_dir), str(eb.sae_dir), state.sae(ea), state.sae(eb))
    if not m.same_hook:
        st.warning(
            f"These SAEs read different hooks ({state.sae(ea).cfg.hook_name} vs "
            f"{state.sae(eb).cfg.hook_name}); their decoders share a width but not necessarily a meaning."
        )
    c = st.columns(4)
    c[0].metric(f"matched above {threshold:.2f}", f"{m.fraction_above(threshold):.1%}")
    c[1].metric("matched pairs", f"{len(m.a):,}")
    c[2].metric("mean cosine", f"{float(m.cosine.mean()):.3f}")
    c[3].metric("features A / B", f"{m.d_sae_a:,} / {m.d_sae_b:,}")
    fig = px.histogram(
        pd.DataFrame({"cosine": m.cosine}),
        x="cosine",
        nbins=50,
        title="Match quality: decoder cosine of each matched pair",
    )
    fig.add_vline(x=threshold, line_dash="dash", line_color="red")
    st.plotly_chart(fig, key="cmp_hist")
    df = pd.DataFrame(m.rows())
    df.insert(1, "open A", [state.feature_url(ea, f) for f in df["feature_a"]])
    df.insert(3, "open B", [state.feature_url(eb, f) for f in df["feature_b"]])
    st.markdown("**Matched pairs** (best first)")
    st.dataframe(
        df,
        hide_index=True,
        key="cmp_pairs",
        column_config={
            "open A": st.column_config.LinkColumn("A's page", display_text="open A"),
            "open B": st.column_config.LinkColumn("B's page", display_text="open B"),
            "cosine": st.column_config.NumberColumn("cosine", format="%.3f"),
        },
    )
