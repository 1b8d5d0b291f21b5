"""MP-SAE (Costa et al. 2025) claims, tested: hierarchical concepts recovered, and adaptive inference.

    python experiments/mp_sae.py [--seeds 0 1 2] [--run runs/embedded_sweep] [--quick] [--out DIR]

Part 1, synthetic concepts in a tree. P parents, each with C mutually exclusive children. As in the geometry of
hierarchical concepts that the MP-SAE paper builds on (Park et al. 2024), a child's vector is its parent's plus
an offset orthogonal to the parent: the true features are the P parent directions u_p and the P*C child offsets
δ_c ⊥ u_{parent(c)} (unit vectors; more features than dimensions, so they interfere). A sample activates each
parent with probability ``p_parent`` (coefficient U(0.5, 1.5)); an active parent shows one of its children
(chosen uniformly; coefficient U(0.5, 1.5)) with probability ``p_child``, so parents also occur alone.
TopK, Mutual Choice and MP SAEs with as many latents as true features are trained by sae-lab's trainer on the
same samples (same seeds); recovery = the mean over true directions of the best |cosine| of any learned decoder
atom, for parents and for child offsets (and, for reference, for whole child vectors u_p + δ_c, which a
flat SAE that absorbs the parent into each child would match instead).

Part 2, adaptive inference. MP can stop each token when its residual is small (mp_stop='relative':
||r|| < τ·||x - b_dec||, at most ``--k-max`` steps). On the synthetic data and on the embedded model (the main
job's MP SAE, ``--run``): L0 and FVU as τ varies; and on the embedded model, whether harder tokens get more
atoms: the Spearman correlation of a token's L0 with the model's next-token loss there and with the token's
rarity (-log of its frequency in the training split), and the mean L0 by loss quintile.

Writes ``OUT/results.json``, ``OUT/mp_sae.md`` and Plotly figures (``OUT/*.html``, offline). ``--quick``: the
reduced CI version (fewer samples and steps; the embedded part trains a small MP SAE on 8k tokens instead of
reading ``--run``).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))
sys.path.insert(1, str(HERE))

ARCHS = ("topk", "mutual_choice", "matching_pursuit")
TAUS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)


@dataclass
class Tree:
    parents: torch.Tensor  # [P, d] unit
    offsets: torch.Tensor  # [P, C, d] unit, offsets[p, c] ⊥ parents[p]

    @property
    def children(self) -> torch.Tensor:
        """Whole child vectors u_p + δ_c, normalised [P*C, d]."""
        return torch.nn.functional.normalize(self.parents.unsqueeze(1) + self.offsets, dim=-1).flatten(0, 1)


def make_tree(d: int, n_parents: int, n_children: int, seed: int) -> Tree:
    g = torch.Generator().manual_seed(seed)
    parents = torch.nn.functional.normalize(torch.randn(n_parents, d, generator=g), dim=-1)
    raw = torch.randn(n_parents, n_children, d, generator=g)
    raw -= (raw * parents.unsqueeze(1)).sum(-1, keepdim=True) * parents.unsqueeze(1)  # ⊥ own parent
    return Tree(parents, torch.nn.functional.normalize(raw, dim=-1))


def sample(tree: Tree, n: int, p_parent: float, p_child: float, seed: int, noise: float = 0.01) -> torch.Tensor:
    """n samples: sum over active parents of a·u_p (+ b·δ_c for one child c, with probability p_child)."""
    g = torch.Generator().manual_seed(seed)
    P, C, d = tree.offsets.shape
    on = torch.rand(n, P, generator=g) < p_parent
    a = (0.5 + torch.rand(n, P, generator=g)) * on
    child = torch.randint(C, (n, P), generator=g)
    b = (0.5 + torch.rand(n, P, generator=g)) * (on & (torch.rand(n, P, generator=g) < p_child))
    x = a @ tree.parents + torch.einsum("np,npd->nd", b, tree.offsets[torch.arange(P), child])
    return x + noise * torch.randn(n, d, generator=g)


def best_cosines(atoms: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """For each true direction, the best |cosine| with any atom."""
    a = torch.nn.functional.normalize(atoms, dim=-1)
    return (truth @ a.t()).abs().max(1).values


def train_all(x: torch.Tensor, d_sae: int, k: int, tokens: int, seed: int, batch: int, archs=ARCHS) -> dict:
    """``archs`` trained by sae-lab's trainer on one TensorSource (one sweep), as {name: SAE in eval mode}."""
    from sae_lab.activations.source import TensorSource
    from sae_lab.saes.config import SAEConfig
    from sae_lab.training import TrainConfig
    from sae_lab.training.trainer import train_sweep

    cfgs = [
        SAEConfig.model_validate({"architecture": a, "name": a, "d_in": x.shape[1], "d_sae": d_sae, "k": k})
        for a in archs
    ]
    cfg = TrainConfig(
        batch_size=batch,
        total_tokens=tokens,
        seed=seed,
        progress=False,
        device="cpu",
        calibrate_tokens=min(8 * batch, x.shape[0] // 4),
    )
    with tempfile.TemporaryDirectory() as tmp:
        result = train_sweep(cfgs, TensorSource(x), cfg, Path(tmp) / "run")
    return {name: sae.eval() for name, sae in result.saes.items()}


@torch.no_grad()
def fvu_l0(sae, x: torch.Tensor) -> tuple[float, float]:
    z = sae.encode(x)
    err = (x - sae.decode(z)).pow(2).sum()
    return float(err / (x - x.mean(0)).pow(2).sum()), float((z != 0).float().sum(1).mean())


def with_stop(sae, tau: float, k_max: int):
    """``sae`` with the relative residual stop rule at τ (τ = 0: the fixed k steps)."""
    import copy

    out = copy.copy(sae)
    update = {"mp_stop": "relative", "mp_threshold": tau, "mp_k_max": k_max} if tau > 0 else {"mp_stop": "fixed"}
    out.cfg = sae.cfg.model_copy(update=update)
    return out


def synthetic(a, seeds: list[int]) -> dict:
    rows, curves = [], []
    for seed in seeds:
        tree = make_tree(a.d, a.parents, a.children, seed)
        x = sample(tree, a.samples, a.p_parent, a.p_child, seed)
        held = sample(tree, 8192, a.p_parent, a.p_child, seed + 10_000)
        d_sae = a.parents * (1 + a.children)
        saes = train_all(x, d_sae, a.k, a.tokens, seed, 1024)
        for name, sae in saes.items():
            W = sae.W_dec.detach()
            fvu, l0 = fvu_l0(sae, held)
            rows.append(
                {
                    "seed": seed,
                    "arch": name,
                    "parents": float(best_cosines(W, tree.parents).mean()),
                    "child_offsets": float(best_cosines(W, tree.offsets.flatten(0, 1)).mean()),
                    "whole_children": float(best_cosines(W, tree.children).mean()),
                    "fvu": fvu,
                    "l0": l0,
                }
            )
        mp = saes["matching_pursuit"]
        for tau in TAUS:
            fvu, l0 = fvu_l0(with_stop(mp, tau, 4 * a.k), held)
            curves.append({"seed": seed, "tau": tau, "fvu": fvu, "l0": l0})
    return {"rows": rows, "adaptive": curves}


def summarise(rows: list[dict], keys: list[str], by: str = "arch") -> dict:
    """mean ± sample std over seeds of each key, per ``by`` value."""
    out = {}
    for name in dict.fromkeys(r[by] for r in rows):
        group = [r for r in rows if r[by] == name]
        out[name] = {
            k: (
                statistics.fmean(r[k] for r in group),
                statistics.stdev(r[k] for r in group) if len(group) > 1 else math.nan,
            )
            for k in keys
        }
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--run", type=Path, default=Path("runs/embedded_sweep"), help="a run with a matching_pursuit SAE")
    ap.add_argument("--quick", action="store_true", help="the reduced CI version")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "mp_sae")
    a = ap.parse_args(argv)
    a.d, a.parents, a.children, a.k, a.p_parent, a.p_child = 32, 12, 3, 4, 0.1, 0.75
    a.samples, a.tokens = (16_384, 16_384 * 2) if a.quick else (131_072, 131_072 * 4)
    t0 = time.perf_counter()
    syn = synthetic(a, a.seeds)
    from mp_sae_embedded import adaptive_embedded

    emb = adaptive_embedded(a)
    result = {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
        "synthetic": syn,
        "embedded": emb,
        "seconds": time.perf_counter() - t0,
    }
    write_outputs(result, a.out)
    return result


def write_outputs(result: dict, out: Path) -> None:
    from figures import save_figure
    from mp_sae_report import figures, markdown

    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2))
    (out / "mp_sae.md").write_text(markdown(result) + "\n")
    for name, fig in figures(result).items():
        save_figure(fig, out, name)
    print(markdown(result))


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
