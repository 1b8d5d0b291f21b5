"""End to end in a real browser: `sae-lab dashboard` on localhost, driven by Playwright through Debian's Chromium,
on a small run trained in the test on the real embedded model. Screenshots go to tests/artifacts/dashboard/."""

import os
from pathlib import Path

import pytest

from browser_helpers import CHROMIUM, browser_page, click_and_wait, dashboard, exceptions, idle, metric, open_page
from sae_lab.evaluation import FeatureDB

pytestmark = [pytest.mark.embedded, pytest.mark.browser]

ARTIFACTS = Path(__file__).resolve().parent / "artifacts" / "dashboard"


def _require_browser() -> None:
    import importlib.util

    missing = [
        what
        for what, ok in (
            ("Debian's chromium", Path(CHROMIUM).exists()),
            ("playwright", importlib.util.find_spec("playwright") is not None),
        )
        if not ok
    ]
    if missing:
        reason = f"{' and '.join(missing)} missing: run `python install.py --dev` (as root, for apt-get)"
        if os.environ.get("CI"):
            pytest.fail(reason)  # CI installs them: never a silent skip there
        pytest.skip(reason)


@pytest.fixture(scope="module")
def server(embedded_run, tmp_path_factory):
    _require_browser()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with dashboard([embedded_run], tmp_path_factory.mktemp("server") / "server.log") as url:
        yield url


@pytest.fixture(scope="module")
def page(server):
    with browser_page() as pg:
        yield pg


def check(pg, name: str) -> None:
    """No exception element on the page; a full-page screenshot as a test artifact."""
    pg.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    assert exceptions(pg) == []


def test_every_page_loads(page, server, embedded_run):
    for path, title in (
        ("", "Runs"),
        ("features", "Feature browser"),
        ("prompt", "Prompt explorer"),
        ("intervene", "Ablate and steer"),
        ("compare", "Compare dictionaries"),
    ):
        open_page(page, server + path)
        page.get_by_role("heading", name=title).first.wait_for()
        assert page.locator('[data-testid="stDialog"]').count() == 0  # e.g. Streamlit's "Page not found"
        check(page, f"page_{path or 'runs'}")
    open_page(page, server)
    text = page.locator('[data-testid="stMain"]').inner_text()
    assert "topk_k8" in text or page.locator('[data-testid="stDataFrame"]').count() >= 1


def test_feature_by_url(page, server, embedded_run):
    db = FeatureDB(embedded_run / "saes" / "topk_k8" / "features.sqlite")
    i = db.list_features("density", limit=1)[0]["id"]
    open_page(page, f"{server}features?run=run&sae=topk_k8&feature={i}")
    page.get_by_text(f"Feature {i}").first.wait_for()
    f, top = db.feature(i), db.top_examples(i)[0]
    assert metric(page, "density") == f"{f['density']:.3%}" and metric(page, "times active") == f"{f['n_active']:,}"
    highlighted = page.locator(".sae-ex span.h").first
    assert highlighted.get_attribute("title").endswith(f"{top['acts'][top['highlight']]:.4g}")
    assert page.locator(".sae-ex").first.inner_text().startswith(f"{top['value']:.3f}")
    check(page, "feature_browser")
    click_and_wait(page, page.get_by_role("button", name="next ▶"))
    page.get_by_text(f"Feature {i + 1}").first.wait_for()
    assert f"feature={i + 1}" in page.url and metric(page, "density") == f"{db.feature(i + 1)['density']:.3%}"


def test_frontier_click_opens_features(page, server, embedded_run):
    """A real mouse click on a point of the FVU-vs-L0 frontier opens that SAE's feature browser."""
    open_page(page, server)
    chart = page.locator('[data-testid="stPlotlyChart"]').first  # the frontier: the first chart of the Runs page
    chart.scroll_into_view_if_needed()
    points = chart.locator("g.scatterlayer path.point")
    points.first.wait_for()
    assert points.count() == 2  # one point per SAE of the run
    box = points.first.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x - 6, y - 6)
    page.mouse.move(x, y)  # plotly picks the clicked point from the last hover
    page.mouse.click(x, y)
    page.wait_for_url("**/features?*")
    idle(page)
    sae = next(n for n in ("topk_k8", "feature_choice_k8") if f"sae={n}" in page.url)
    assert "run=run" in page.url and "feature=0" in page.url
    page.get_by_text("Feature 0").first.wait_for()
    db = FeatureDB(embedded_run / "saes" / sae / "features.sqlite")
    assert metric(page, "density") == f"{db.feature(0)['density']:.3%}"
    check(page, "frontier_click")


def submit(pg, label: str = "Run") -> None:
    click_and_wait(pg, pg.get_by_role("button", name=label))


def test_prompt_explorer(page, server, embedded_run, embedded_model):
    from sae_lab import load_sae
    from sae_lab.circuits import prompt_features

    prompt = "The capital of France is Paris. The capital of Germany is"
    open_page(page, f"{server}prompt?run=run&sae=topk_k8")
    page.locator("textarea").first.fill(prompt)
    pf = prompt_features(embedded_model, load_sae(embedded_run / "saes" / "topk_k8"), prompt, top_k=5)
    submit(page)
    page.wait_for_function("n => document.querySelectorAll('.sae-ex span.t').length === n", arg=len(pf.tokens))
    tokens = page.locator(".sae-ex span.t")
    assert tokens.count() == len(pf.tokens)
    best = max(pf.acts, key=lambda f: max(pf.acts[f]))
    assert page.get_by_text(f"Feature {best}").first.is_visible()
    title = tokens.nth(max(range(len(pf.tokens)), key=lambda t: pf.acts[best][t])).get_attribute("title")
    assert title.endswith(f"{max(pf.acts[best]):.4g}")
    check(page, "prompt_explorer")


def _intervene(pg, server, action: str, value: str, feature: int) -> tuple[str, str]:
    open_page(pg, f"{server}intervene?run=run&sae=topk_k8&feature={feature}")
    pg.get_by_role("combobox", name="Action").click()
    pg.get_by_role("option", name=action).click()
    box = pg.get_by_label("Value / strength")
    box.fill(value)
    submit(pg)
    pg.get_by_text("Greedy generation after").wait_for()
    codes = pg.locator('[data-testid="stCode"]')
    return codes.nth(0).inner_text().strip(), codes.nth(1).inner_text().strip()


def test_ablation_and_steering(page, server, embedded_run, embedded_model):
    from sae_lab import load_sae
    from sae_lab.circuits import Intervention, compare_interventions

    sae = load_sae(embedded_run / "saes" / "topk_k8")
    prompt, feature = "The capital of France is", 0
    before, after = _intervene(page, server, "zero-ablate", "0", feature)
    check(page, "ablate")
    ref = compare_interventions(
        embedded_model,
        sae,
        prompt,
        [Intervention.zero(sae, [feature])],
        tokens=[" Paris", " London"],
        max_new_tokens=12,
    )
    assert before == ref["before"]["generation"].strip() and after == ref["after"]["generation"].strip()
    before, after = _intervene(page, server, "steer with a strength", "400", feature)
    check(page, "steer")
    ref = compare_interventions(
        embedded_model,
        sae,
        prompt,
        [Intervention.steer(sae, [feature], 400.0)],
        tokens=[" Paris", " London"],
        max_new_tokens=12,
    )
    assert after == ref["after"]["generation"].strip() and after != before


def test_compare_dictionaries(page, server, embedded_run):
    from sae_lab import load_sae
    from sae_lab.evaluation.compare import match_dictionaries

    open_page(page, server + "compare")
    page.get_by_text("matched above 0.70").first.wait_for()
    m = match_dictionaries(*(load_sae(embedded_run / "saes" / n) for n in ("feature_choice_k8", "topk_k8")))
    assert metric(page, "matched above 0.70") == f"{m.fraction_above(0.7):.1%}"
    assert metric(page, "matched pairs") == f"{len(m.a):,}"
    check(page, "compare")


def test_explanation_search_opens_the_feature(page, server, embedded_run):
    """The feature browser's search over explanations: a ranked hit links to the feature page, which shows the
    explanation and its scores (written here directly, so the test needs no explainer model)."""
    from sae_lab.explain.store import ExplanationStore

    path = embedded_run / "saes" / "topk_k8" / "features.sqlite"
    with FeatureDB(path) as db:
        i = db.list_features("density", limit=1)[0]["id"]
    with ExplanationStore(path) as store:
        store.put(i, "test:fixed", "Closing brackets of function calls", "", "v", 0)
        store.put_scores(i, "test:fixed", "test:fixed", {})
    open_page(page, f"{server}features?run=run&sae=topk_k8&feature=0")
    click_and_wait(page, page.get_by_role("tab", name="Search explanations"))
    box = page.get_by_label("Words of an explanation (e.g. closing bracket)")
    box.fill("closing bracket")
    box.press("Enter")
    idle(page)
    link = page.locator('[data-testid="stMain"] a', has_text=f"#{i}").first
    link.wait_for()
    href = link.get_attribute("href")
    assert f"feature={i}" in href
    from urllib.parse import urljoin

    open_page(page, urljoin(page.url, href))  # Streamlit opens markdown links in a new tab: follow it here
    page.get_by_text(f"Feature {i}").first.wait_for()
    page.get_by_text("Closing brackets of function calls").first.wait_for()
    check(page, "explanation_search")
