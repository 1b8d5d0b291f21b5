"""Prompt explorer: the tokens of a prompt coloured by a chosen feature, and the top features at every token."""

import pandas as pd
import render
import state
import streamlit as st

from sae_lab.circuits import CircuitError, prompt_features

st.title("Prompt explorer")
entry = state.select_sae()
DEFAULT = "The capital of France is Paris. The capital of Germany is"


@st.cache_data(show_spinner=False, max_entries=64)
def run_prompt(key: str, prompt: str, top_k: int, extra: tuple[int, ...] = ()):
    model, sae = state.model_and_sae(state.workspace().entry(*key.split("/", 1)))
    pf = prompt_features(model, sae, prompt, top_k=top_k)
    if extra:
        pf.acts.update(prompt_features(model, sae, prompt, top_k=0, features=list(extra)).acts)
    return pf


def top_table(pf, k: int) -> pd.DataFrame:
    rows = [
        {"position": p, "token": tok, "rank": r + 1, "feature": f, "activation": v, "open": state.feature_url(entry, f)}
        for p, (tok, top) in enumerate(zip(pf.tokens, pf.top))
        for r, (f, v) in enumerate(top[:k])
    ]
    return pd.DataFrame(rows, columns=["position", "token", "rank", "feature", "activation", "open"])


with st.form("prompt_form"):
    prompt = st.text_area("Prompt", DEFAULT, key="prompt_text", height=100)
    top_k = st.slider("Top features per token", 1, 20, 5, key="prompt_top_k")
    st.form_submit_button("Run", type="primary")

with state.user_errors(), st.spinner("Running the model with the SAE spliced in…"):
    try:
        pf = run_prompt(entry.key, prompt, top_k)
    except CircuitError as e:
        st.error(str(e))
        st.stop()
    ranked = sorted(pf.acts, key=lambda f: -max(pf.acts[f]))
    if not ranked:
        st.info("No feature fires on this prompt.")
        st.stop()
    url_feature = state.query_int("feature")
    if url_feature is not None and url_feature not in pf.acts:
        pf = run_prompt(entry.key, prompt, top_k, (url_feature,))
    default = url_feature if url_feature is not None else ranked[0]
    options = ([default] if default not in ranked else []) + ranked
    f = st.selectbox(
        "Colour the tokens by feature",
        options,
        index=options.index(default),
        key=f"prompt_colour_{abs(hash((prompt, top_k)))}",  # a new prompt starts at its top feature
        format_func=lambda i: f"#{i} (max {max(pf.acts[i]):.3g})",
    )
    acts = pf.acts[f]
    st.markdown(
        f"**Feature {f}** on each token ([open its page]({state.feature_url(entry, f)}); hover a token "
        "for its exact activation)"
    )
    st.html(render.STYLE + render.tokens_html(pf.tokens, acts, max(max(acts), 1e-9)))
    st.markdown(f"**Top features at each token** ({len(pf.tokens)} tokens; the links open the feature pages)")
    st.dataframe(
        top_table(pf, top_k),
        hide_index=True,
        key="prompt_top",
        column_config={
            "open": st.column_config.LinkColumn("feature page", display_text="open"),
            "activation": st.column_config.NumberColumn("activation", format="%.3f"),
        },
    )
