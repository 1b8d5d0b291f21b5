"""Ablate and steer: edit chosen features on a prompt and compare the model before and after."""

import pandas as pd
import plotly.graph_objects as go
import state
import streamlit as st

from sae_lab.circuits import CircuitError, Intervention, compare_interventions

st.title("Ablate and steer")
entry = state.select_sae()
SHOWN, LOOKUP = 10, 200  # tokens drawn per side; how far down each side's distribution their bars are looked up
ACTIONS = {"zero-ablate": "zero", "mean-ablate": "mean", "clamp to a value": "clamp", "steer with a strength": "steer"}


def parse_ints(text: str, what: str) -> list[int]:
    try:
        values = [int(x) for x in text.replace(",", " ").split()]
    except ValueError:
        raise CircuitError(f"{what} must be whole numbers separated by commas, got {text!r}") from None
    if not values:
        raise CircuitError(f"give at least one {what[:-1]} (e.g. 12, 40)")
    return values


def build(sae, db, action: str, features: list[int], value: float, positions) -> Intervention:
    kind = ACTIONS[action]
    if kind == "zero":
        return Intervention.zero(sae, features, positions)
    if kind == "mean":
        return Intervention.mean(sae, features, db, positions)
    if kind == "clamp":
        return Intervention.clamp(sae, features, value, positions)
    return Intervention.steer(sae, features, value, positions)


def show(result: dict, tokens: list[str]) -> None:
    before, after = result["before"], result["after"]
    names = list(dict.fromkeys([t for t, _ in before["top"][:SHOWN]] + [t for t, _ in after["top"][:SHOWN]]))
    prob = {side: dict(result[side]["top"]) for side in ("before", "after")}
    fig = go.Figure(
        [
            go.Bar(name=side, x=[repr(n) for n in names], y=[prob[side].get(n, 0.0) for n in names])
            for side in ("before", "after")
        ]
    )
    fig.update_layout(
        barmode="group",
        title=f"Next-token probability (the top {SHOWN} before and after)",
        height=340,
        yaxis_title="probability",
    )
    st.plotly_chart(fig, key="iv_dist")
    st.caption(f"A bar at 0 means the token is outside that side's top {LOOKUP}.")
    if tokens:
        cols = st.columns(len(tokens) + (1 if before["logit_diff"] is not None else 0))
        for col, t in zip(cols, tokens):
            col.metric(f"logit {t!r}", f"{after['logits'][t]:.3f}", f"{after['logits'][t] - before['logits'][t]:+.3f}")
        if before["logit_diff"] is not None:
            cols[-1].metric(
                f"logit diff {tokens[0]!r} − {tokens[1]!r}",
                f"{after['logit_diff']:.3f}",
                f"{after['logit_diff'] - before['logit_diff']:+.3f}",
            )
    left, right = st.columns(2)
    left.markdown("**Greedy generation before**")
    left.code(before["generation"], language=None, wrap_lines=True)
    right.markdown("**Greedy generation after**")
    right.code(after["generation"], language=None, wrap_lines=True)
    st.dataframe(
        pd.DataFrame(
            {
                "before": [f"{t!r} {p:.3f}" for t, p in before["top"][:SHOWN]],
                "after": [f"{t!r} {p:.3f}" for t, p in after["top"][:SHOWN]],
            }
        ),
        key="iv_table",
    )


with st.form("intervene_form"):
    prompt = st.text_area("Prompt", "The capital of France is", key="iv_prompt", height=80)
    c = st.columns([2, 2, 1, 2])
    features = c[0].text_input("Features (comma-separated)", str(state.query_int("feature") or 0), key="iv_features")
    action = c[1].selectbox("Action", list(ACTIONS), key="iv_action")
    value = c[2].number_input("Value / strength", value=8.0, key="iv_value")
    positions = c[3].text_input("Positions ('all' or indices; 0 = BOS)", "all", key="iv_positions")
    t = st.columns(3)
    tok_a = t[0].text_input("Token A for the logit difference", " Paris", key="iv_tok_a")
    tok_b = t[1].text_input("Token B", " London", key="iv_tok_b")
    new_tokens = t[2].slider("New tokens to generate", 0, 40, 12, key="iv_new_tokens")
    submitted = st.form_submit_button("Run", type="primary")

if submitted:
    with state.user_errors(), st.spinner("Running the model before and after the intervention…"):
        st.session_state.pop("iv_result", None)
        model, sae = state.model_and_sae(entry)
        db = state.feature_db(entry) if ACTIONS[action] == "mean" else None
        pos = "all" if positions.strip().lower() == "all" else parse_ints(positions, "positions")
        iv = build(sae, db, action, parse_ints(features, "features"), value, pos)
        tokens = [x for x in (tok_a, tok_b) if x]
        st.session_state["iv_result"] = (
            compare_interventions(model, sae, prompt, [iv], tokens=tokens, top_n=LOOKUP, max_new_tokens=new_tokens),
            tokens,
        )
if "iv_result" in st.session_state:
    show(*st.session_state["iv_result"])
