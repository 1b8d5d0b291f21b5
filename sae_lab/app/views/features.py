"""Feature browser: open a feature (explanation search, index, token search, density order, random alive) and see
its whole page, with its explanations and their scores."""

import pandas as pd
import render
import state
import streamlit as st

from sae_lab.evaluation.feature_db import FeatureQueryError

st.title("Feature browser")
entry = state.select_sae()
qp = st.query_params


def open_feature(i: int) -> None:
    st.query_params["feature"] = int(i)


def _on_index() -> None:
    open_feature(st.session_state["feature_index"])


def _on_random(db) -> None:
    i = db.random_alive()
    if i is not None:
        open_feature(i)


def current_feature(db) -> int | None:
    """The feature named by ``?feature=`` (0 if absent); None after showing what is wrong with it."""
    raw = qp.get("feature", "0")
    try:
        i = int(raw)
    except ValueError:
        st.error(f"'{raw}' is not a feature index: give a whole number from 0 to {db.n_features - 1}.")
        return None
    if not 0 <= i < db.n_features:
        st.error(f"Feature {i} is out of range: SAE '{entry.key}' has features 0 to {db.n_features - 1}.")
        return None
    return i


def explanation_search(db) -> None:
    """A search box over the explanations (``FeatureDB.search``); hits ranked, each a link to its feature page."""
    if not db.has_explanations:
        st.info("This SAE has no explanations yet: write them with `sae-lab explain RUN_OR_SAE_DIR`.")
        return
    query = st.text_input("Words of an explanation (e.g. closing bracket)", key="search_explanations")
    if not query:
        return
    try:
        hits = db.search(query, limit=50)
    except FeatureQueryError as e:
        st.warning(str(e))
        return
    if not hits:
        st.info(f"No explanation matches {query!r}.")
        return
    st.markdown(
        "\n".join(
            f"{n}. [#{h['feature']}]({state.feature_url(entry, h['feature'])}) "
            f"{render.escape_markdown(h['explanation'])} · {render.scores_text(h)}"
            for n, h in enumerate(hits, 1)
        )
    )


def finder(db, i: int | None) -> None:
    t_expl, t_index, t_search, t_density, t_random = st.tabs(
        ["Search explanations", "By index", "Search a token", "By density", "Random"]
    )
    with t_expl:
        explanation_search(db)
    with t_index:
        st.session_state["feature_index"] = i if i is not None else 0
        st.number_input(
            f"Feature (0–{db.n_features - 1})", 0, db.n_features - 1, step=1, key="feature_index", on_change=_on_index
        )
    with t_search:
        token = st.text_input("Token (with or without a leading space)", key="search_token")
        where = st.radio(
            "Among", ["top examples", "top positive logits", "top negative logits"], horizontal=True, key="search_where"
        )
        if token:
            try:
                if where == "top examples":
                    hits = db.features_with_example_token(token)
                else:
                    hits = db.features_with_logit_token(token, top=where == "top positive logits")
            except FeatureQueryError as e:  # not a token of the vocabulary: say so here, keep the rest of the page
                st.warning(str(e))
                hits = None
            if hits == []:
                st.info(f"No feature has {token!r} among its {where}.")
            elif hits:
                df = pd.DataFrame(hits)
                df.insert(0, "search hit", [state.feature_url(entry, f) for f in df["feature"]])
                st.dataframe(
                    df,
                    hide_index=True,
                    key="search_hits",
                    column_config={"search hit": st.column_config.LinkColumn("open", display_text="open")},
                )
                labels = [f"#{h['feature']}" for h in hits]
                pick = st.selectbox(f"{len(hits)} feature(s)", labels, key="search_pick")
                st.button("Open", key="search_open", on_click=open_feature, args=(int(pick[1:]),))
    with t_density:
        order = st.radio("Order", ["densest first", "rarest alive first"], horizontal=True, key="density_order")
        rows = db.list_features("density", descending=order == "densest first", limit=200, alive_only=True)
        df = pd.DataFrame(rows)
        if df.empty:
            st.info("Every feature is dead in the analysed tokens.")
        else:
            df.insert(0, "open", [state.feature_url(entry, f) for f in df["id"]])
            st.dataframe(
                df,
                hide_index=True,
                key="density_list",
                height=250,
                column_config={"open": st.column_config.LinkColumn("open", display_text="open")},
            )
    with t_random:
        st.caption(f"{db.n_alive()} of {db.n_features} features are alive (fired in the analysed tokens).")
        st.button("Random alive feature", key="random_feature", on_click=_on_random, args=(db,))


def header(db, i: int, f: dict) -> None:
    cols = st.columns([1, 1, 6])
    cols[0].button("◀ previous", key="prev", disabled=i == 0, on_click=open_feature, args=(i - 1,))
    cols[1].button("next ▶", key="next", disabled=i >= db.n_features - 1, on_click=open_feature, args=(i + 1,))
    cols[2].markdown(f"### Feature {i} · `{entry.key}`")
    m = st.columns(5)
    m[0].metric("density", f"{f['density']:.3%}")
    m[1].metric("times active", f"{f['n_active']:,}")
    m[2].metric("mean when active", f"{f['mean_act']:.3f}")
    m[3].metric("max activation", f"{f['max_act']:.3f}")
    m[4].metric("decoder norm", f"{f['decoder_norm']:.3f}")


def related(title: str, rows: list[dict], value: str) -> None:
    st.markdown(f"**{title}**")
    if not rows:
        st.caption("none")
        return
    df = pd.DataFrame(rows)
    df.insert(0, "open", [state.feature_url(entry, r["feature"]) for r in rows])
    st.dataframe(
        df,
        hide_index=True,
        key=f"rel_{title}",
        column_config={
            "open": st.column_config.LinkColumn("open", display_text="open"),
            value: st.column_config.NumberColumn(value, format="%.3f"),
        },
    )


def page(db, i: int) -> None:
    p = db.feature_page(i)
    header(db, i, p)
    if p["n_active"] == 0:
        st.warning("This feature never fired in the analysed tokens (dead): it has no examples.")
    for e in p["explanations"]:
        st.markdown(f"**Explanation** ({e['explainer']}): {render.escape_markdown(e['explanation'])}")
        st.caption(render.scores_text(e))
    left, right = st.columns([3, 2])
    with left:
        st.markdown("**Top examples** (hover a token for its exact activation)")
        st.html(render.examples_html(p["top_examples"], p["max_act"]))
        st.markdown("**Interval samples** (low → high activation)")
        for iv in p["intervals"]:
            st.markdown(f"`[{iv['lo']:.3g}, {iv['hi']:.3g})` · {iv['count']:,} activations")
            st.html(render.examples_html(iv["examples"], p["max_act"]))
    with right:
        st.plotly_chart(render.histogram(p["hist_counts"], p["hist_edges"], "activation histogram"), key="hist")
        pos, neg = st.columns(2)
        for col, sign in ((pos, "positive"), (neg, "negative")):
            with col:
                st.markdown(f"**Top {'+' if sign == 'positive' else '−'} logits**")
                st.dataframe(
                    pd.DataFrame(p["logits"][sign], columns=["token", "value"]), hide_index=True, key=f"logits_{sign}"
                )
        related("Nearest features (decoder cosine)", p["neighbours"], "cosine")
        related("Co-occurring features", p["cooccurring"], "fraction")
    dfa_section(i)


def dfa_section(i: int) -> None:
    """Direct feature attribution by head and source position, for attention-output (hook_z) SAEs."""
    from sae_lab.hooknames import parse_hook

    if not parse_hook(state.sae(entry).cfg.hook_name).is_attn_z:
        return
    import dfa_section

    dfa_section.section(entry, i)


with state.user_errors():
    db = state.feature_db(entry)
    i = current_feature(db)
    finder(db, i)
    st.divider()
    if i is not None:
        page(db, i)
