"""The feature browser's direct-feature-attribution section for attention-output (hook_z) SAEs."""

from __future__ import annotations

import plotly.express as px
import state
import streamlit as st

from sae_lab.circuits.dfa import direct_feature_attribution


@st.cache_data(show_spinner=False, max_entries=64)
def _dfa(key: str, feature: int, token_ids: tuple[int, ...], position: int) -> dict:
    model, sae = state.model_and_sae(state.workspace().entry(*key.split("/", 1)))
    return direct_feature_attribution(model, sae, list(token_ids), feature, position=position).to_dict()


def _label(e: dict) -> str:
    h = e["highlight"]
    return f"{e['value']:.3f} · …{''.join(e['tokens'][max(0, h - 6) : h + 1])!r}"


def section(entry, feature: int) -> None:
    """Split the feature's pre-activation on one of its top examples by head and source position."""
    st.subheader("Direct feature attribution (by head and source position)")
    examples = state.feature_db(entry).top_examples(feature, 10)
    if not examples:
        st.caption("No example to attribute: the feature never fired in the analysed tokens.")
        return
    k = st.selectbox(
        "On top example", range(len(examples)), format_func=lambda j: _label(examples[j]), key=f"dfa_example_{feature}"
    )
    e = examples[k]
    with st.spinner("Attributing through the attention pattern…"):
        d = _dfa(entry.key, feature, tuple(e["token_ids"]), e["highlight"])
    t = d["position"]
    grid = [row[: t + 1] for row in d["by_head_source"]]
    sources = [f"{s}: {tok!r}" for s, tok in enumerate(d["tokens"][: t + 1])]
    total = sum(map(sum, grid)) + d["bias"]
    c = st.columns(4)
    c[0].metric("pre-activation", f"{d['pre_activation']:.4f}")
    c[1].metric("heads × sources + bias", f"{total:.4f}")
    c[2].metric("bias term", f"{d['bias']:.4f}")
    c[3].metric("activation", f"{d['activation']:.4f}")
    fig = px.imshow(
        grid,
        x=sources,
        y=[f"head {h}" for h in range(len(grid))],
        color_continuous_scale="RdBu",
        color_continuous_midpoint=0,
        aspect="auto",
        title=f"Contribution to feature {feature} at token {t} ({d['tokens'][t]!r})",
    )
    st.plotly_chart(fig, key=f"dfa_{feature}")
