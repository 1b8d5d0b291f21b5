"""Dashboard speed in a real browser (Debian's Chromium via Playwright), from the action to the rendered result.

1. Feature page on a 16,384-latent feature database (synthetic contents in the real schema, tests/synthetic_db.py):
   click "next ▶" and wait until the new feature's page is rendered (script run over, no placeholder left);
   also a fresh page load by URL. Reference in the same run: the same on a 1,024-latent database.
2. Prompt explorer on a 64-token prompt (BOS included) with the embedded model and a 2,304-latent TopK SAE on
   blocks.15.hook_resid_post: type a new prompt, click Run, wait until all 64 tokens are drawn. A new prompt
   every round (no cache hit). Reference in the same run: the bare library call `prompt_features` in this process.

    python experiments/bench_dashboard.py --rounds 5

Needs `python install.py --dev` (Playwright and Debian's chromium). Run it alone (flock /tmp/sae_heavy.lock ...).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from browser_helpers import browser_page, click_and_wait, dashboard, exceptions, open_page  # noqa: E402
from synthetic_db import write_synthetic_db  # noqa: E402

HOOK = "blocks.15.hook_resid_post"


def make_sae_dir(where: Path, d_sae: int, with_db: bool) -> Path:
    import torch

    from sae_lab.saedir import SAEDir
    from sae_lab.saes import SAEConfig, build_sae

    torch.manual_seed(0)
    sae = build_sae(SAEConfig(architecture="topk", d_in=576, d_sae=d_sae, k=32, hook_name=HOOK, name=where.name))
    SAEDir(where).save(sae)
    if with_db:
        write_synthetic_db(where / "features.sqlite", n_features=d_sae)
    return where


def prompts_of_64_tokens(tokenizer, n: int) -> list[str]:
    """``n`` different texts of Python's docs that the model reads as exactly 64 tokens (BOS + 63)."""
    from pydoc_data.topics import topics

    out = []
    for text in topics.values():
        ids = tokenizer.encode(text, add_special_tokens=False)
        for start in range(0, len(ids) - 80, 70):
            s = tokenizer.decode(ids[start : start + 63])
            if s.strip() and len(tokenizer.encode(s, add_special_tokens=False)) == 63:
                out.append(s)
            if len(out) == n:
                return out
    raise RuntimeError("not enough text")


def time_feature_pages(pg, url: str, run: str, rounds: int) -> dict:
    open_page(pg, f"{url}features?run={run}&sae={run}&feature=0")  # warm: database opened, SAE loaded
    clicks, loads = [], []
    for r in range(rounds):
        t = time.perf_counter()
        click_and_wait(pg, pg.get_by_role("button", name="next ▶"))
        pg.get_by_text(f"Feature {r + 1} ·").first.wait_for()
        clicks.append(time.perf_counter() - t)
    for r in range(rounds):
        t = time.perf_counter()
        open_page(pg, f"{url}features?run={run}&sae={run}&feature={100 + r}")
        pg.get_by_text(f"Feature {100 + r} ·").first.wait_for()
        loads.append(time.perf_counter() - t)
    assert not exceptions(pg), exceptions(pg)
    return {"click": clicks, "load": loads}


def time_prompts(pg, url: str, prompts: list[str]) -> tuple[float, list[float]]:
    t = time.perf_counter()
    open_page(pg, f"{url}prompt?run=wide&sae=wide")  # runs the default prompt: loads the model (cold)
    pg.wait_for_selector(".sae-ex span.t")
    cold = time.perf_counter() - t
    times = []
    for p in prompts:
        pg.locator("textarea").first.fill(p)
        t = time.perf_counter()
        click_and_wait(pg, pg.get_by_role("button", name="Run"))
        pg.wait_for_function("document.querySelectorAll('.sae-ex span.t').length === 64")
        times.append(time.perf_counter() - t)
    assert not exceptions(pg), exceptions(pg)
    return cold, times


def library_times(prompts: list[str], sae_dir: Path) -> list[float]:
    from sae_lab import load_model, load_sae
    from sae_lab.circuits import prompt_features

    model, sae = load_model("embedded", "cpu"), load_sae(sae_dir)
    prompt_features(model, sae, "warm-up", top_k=5)
    out = []
    for p in prompts:
        t = time.perf_counter()
        pf = prompt_features(model, sae, p, top_k=5)
        out.append(time.perf_counter() - t)
        assert len(pf.tokens) == 64
    return out


def fmt(xs: list[float]) -> str:
    return f"median {statistics.median(xs):.3f} s (min {min(xs):.3f}, max {max(xs):.3f}, n={len(xs)})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    from sae_lab.models import load_model

    tmp = Path(tempfile.mkdtemp(prefix="bench_dashboard_"))
    t = time.perf_counter()
    wide = make_sae_dir(tmp / "wide", 16_384, True)
    small = make_sae_dir(tmp / "small", 1_024, True)
    print(f"built the 16k and 1k databases in {time.perf_counter() - t:.0f} s")
    prompts = prompts_of_64_tokens(load_model("embedded", "cpu").tokenizer, args.rounds)
    with dashboard([wide, small], tmp / "server.log", ["--model", "embedded"]) as url, browser_page() as pg:
        t = time.perf_counter()
        open_page(pg, url + "runs")
        print(f"first page after server start (cold imports): {time.perf_counter() - t:.2f} s")
        big = time_feature_pages(pg, url, "wide", args.rounds)
        ref = time_feature_pages(pg, url, "small", args.rounds)
        cold, warm = time_prompts(pg, url, prompts)
    lib = library_times(prompts, wide)
    print("\n| measurement | result |\n|---|---|")
    print(f"| feature page, click next, 16,384 latents | {fmt(big['click'])} |")
    print(f"| feature page, click next, 1,024 latents (reference) | {fmt(ref['click'])} |")
    ratio = statistics.median(big["click"]) / statistics.median(ref["click"])
    print(f"| ratio 16k / 1k (click, medians) | {ratio:.2f} |")
    print(f"| feature page, load by URL (new session), 16,384 latents | {fmt(big['load'])} |")
    print(f"| feature page, load by URL (new session), 1,024 latents | {fmt(ref['load'])} |")
    print(f"| prompt explorer, first page load (loads the model, runs the default prompt) | {cold:.2f} s |")
    print(f"| prompt explorer, 64 tokens, new prompt each round | {fmt(warm)} |")
    print(f"| `prompt_features` library call, same prompts (reference) | {fmt(lib)} |")
    print(f"| ratio browser / library (medians) | {statistics.median(warm) / statistics.median(lib):.2f} |")


if __name__ == "__main__":
    main()
