"""Runs: every SAE with its architecture, config and eval metrics; training curves; the FVU-vs-L0 frontier."""

import pandas as pd
import plotly.express as px
import state
import streamlit as st

st.title("Runs")
ws = state.workspace()


def _info(entry) -> dict:
    c = state.sae(entry).cfg
    return {
        "architecture": c.architecture,
        "hook_name": c.hook_name,
        "d_in": c.d_in,
        "d_sae": c.d_sae,
        "k": getattr(c, "k", None),
    }


with state.user_errors():
    entries = {e.key: e for e in ws.entries()}
    table = pd.DataFrame(ws.table(sae_info=_info))
    if table.empty:
        st.warning("None of the given directories holds a trained SAE yet.")
        st.stop()
    table.insert(2, "open", [state.feature_url(entries[f"{r}/{s}"], 0) for r, s in zip(table["run"], table["sae"])])
    st.caption(
        f"{len(table)} SAE(s) in {len(ws.roots)} director{'y' if len(ws.roots) == 1 else 'ies'}: "
        + ", ".join(f"`{p}`" for p in ws.roots.values())
    )
    st.dataframe(
        table,
        hide_index=True,
        key="runs_table",
        column_config={
            "open": st.column_config.LinkColumn("features", display_text="open"),
            "feature_db": st.column_config.CheckboxColumn("feature DB"),
            **{
                m: st.column_config.NumberColumn(m, format="%.4f")
                for m in (
                    "fvu",
                    "dead_fraction",
                    "dense_fraction",
                    "loss_recovered_zero",
                    "loss_recovered_mean",
                    "kl_sae",
                    "cos",
                )
            },
        },
    )

    st.subheader("FVU vs L0")
    frontier = table.dropna(subset=["fvu", "l0_mean"])
    if frontier.empty:
        st.info("No eval metrics yet: run `sae-lab eval RUN_DIR` to place the SAEs on the frontier.")
    else:
        fig = px.scatter(
            frontier,
            x="l0_mean",
            y="fvu",
            color="architecture",
            symbol="run" if frontier["run"].nunique() > 1 else None,
            hover_data=["run", "sae", "d_sae", "k"],
            custom_data=["run", "sae"],
            labels={"l0_mean": "L0 (active latents per token)", "fvu": "FVU"},
        )
        fig.update_traces(marker={"size": 12})
        fig.update_xaxes(autorangeoptions={"include": [0]}).update_yaxes(autorangeoptions={"include": [0]})
        picked = st.plotly_chart(fig, on_select="rerun", selection_mode="points", key="frontier")
        points = (picked or {}).get("selection", {}).get("points", []) if picked else []
        if points:
            run, sae = points[0]["customdata"][:2]
            st.switch_page("views/features.py", query_params={"run": run, "sae": sae, "feature": 0})
        pick, go = st.columns([4, 1], vertical_alignment="bottom")
        key = pick.selectbox("Click a point, or choose an SAE, to open its features", list(entries), key="runs_open")
        if go.button("Open features", key="runs_open_button"):
            st.switch_page("views/features.py", query_params={"run": entries[key].run, "sae": entries[key].name})

    st.subheader("Training curves")
    curves = pd.DataFrame(ws.curves())
    if curves.empty:
        st.info("No training metrics (metrics.jsonl) in these directories.")
    else:
        curves["sae"] = curves["run"] + "/" + curves["sae"]
        for tab, metric in zip(st.tabs(["loss", "FVU", "L0", "dead fraction"]), ("loss", "fvu", "l0", "dead_frac")):
            with tab:
                fig = px.line(curves.dropna(subset=[metric]), x="tokens", y=metric, color="sae", markers=True)
                st.plotly_chart(fig, key=f"curve_{metric}")
