"""Check sae-lab's SAELens on-disk format against the real SAELens, in both directions.

    python experiments/check_saelens_interop.py [--peer-envs /work/peer_envs] [--work DIR]

Needs the `saelens` venv of experiments/peers/README.md (SAELens needs transformer-lens<4, so it cannot share
sae-lab's environment). Steps:
1. sae-lab saves one SAE per architecture (thresholds warmed up by a few training batches, the normalisation
   scale folded in) into WORK/ours/; SAELens loads each with ``SAE.load_from_disk`` and encodes/decodes the
   same raw inputs. Signed matching pursuit has no SAELens equivalent and must be refused.
2. SAELens saves its TopK, JumpReLU, standard and matching-pursuit SAEs (``save_model``) into WORK/theirs/;
   ``sae_lab.load_sae`` loads each and encodes/decodes the same inputs.
Prints max |Δ code| and max |Δ reconstruction| per SAE and exits 1 if any differs by more than 1e-4
(relative to the largest value) or a mappable SAE fails to load.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

import sae_lab
from sae_lab.saedir import SAEDir
from sae_lab.saes import build_sae

HERE = Path(__file__).resolve().parent
D_IN, D_SAE, SCALE, TOL = 64, 256, 1.7, 1e-4
OURS = {
    "topk": dict(architecture="topk", k=8),
    "mutual_choice": dict(architecture="mutual_choice", k=8),
    "feature_choice_zipf": dict(architecture="feature_choice", k=8, capacity_rule="zipf"),
    "standard": dict(architecture="standard"),
    "matching_pursuit": dict(architecture="matching_pursuit", k=12),
    "matching_pursuit_adaptive": dict(
        architecture="matching_pursuit", k=12, mp_stop="absolute", mp_threshold=2.0, mp_k_max=30, mp_stop_on_repeat=True
    ),
    "matching_pursuit_signed": dict(architecture="matching_pursuit", k=12, mp_nonneg=False),
}
UNMAPPABLE = {"matching_pursuit_signed"}


def save_ours(work: Path, x: torch.Tensor) -> None:
    """Each SAE trained on s·x for a few steps (so choice thresholds exist), saved with s folded in."""
    for name, options in OURS.items():
        torch.manual_seed(0)
        sae = build_sae(dict(d_in=D_IN, d_sae=D_SAE, hook_name="blocks.0.hook_resid_post", name=name, **options))
        with torch.no_grad():
            sae.init_b_dec(x * SCALE, "mean")
            for _ in range(5):
                sae.training_forward(x * SCALE)
        SAEDir(work / "ours" / name).save(sae, fold_scale=SCALE)


def compare(ours, codes: np.ndarray, recon: np.ndarray, x: torch.Tensor) -> tuple[float, float]:
    """Max abs differences of codes and reconstructions, relative to the largest value of each."""
    with torch.no_grad():
        z = ours.encode(x)
        x_hat = ours.decode(z)
    dz = float((z - torch.from_numpy(codes)).abs().max() / max(float(z.abs().max()), 1e-12))
    dx = float((x_hat - torch.from_numpy(recon)).abs().max() / max(float(x_hat.abs().max()), 1e-12))
    return dz, dx


def report(work: Path, x: torch.Tensor) -> list[tuple[str, str, str, str, bool]]:
    rows = []
    for d in sorted((work / "ours").iterdir()):
        err = d / "saelens_error.txt"
        if err.exists():
            refused = d.name in UNMAPPABLE
            rows.append(("sae-lab -> SAELens", d.name, "refused" if refused else "LOAD FAILED", "-", refused))
            if not refused:
                print(err.read_text(), file=sys.stderr)
            continue
        dz, dx = compare(sae_lab.load_sae(d), np.load(d / "saelens_codes.npy"), np.load(d / "saelens_recon.npy"), x)
        rows.append(
            ("sae-lab -> SAELens", d.name, f"{dz:.1e}", f"{dx:.1e}", d.name not in UNMAPPABLE and max(dz, dx) < TOL)
        )
    for d in sorted((work / "theirs").iterdir()):
        dz, dx = compare(sae_lab.load_sae(d), np.load(d / "saelens_codes.npy"), np.load(d / "saelens_recon.npy"), x)
        rows.append(("SAELens -> sae-lab", d.name, f"{dz:.1e}", f"{dx:.1e}", max(dz, dx) < TOL))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peer-envs", default="/work/peer_envs")
    ap.add_argument("--work", default=None, help="working directory (default: a fresh temporary one)")
    args = ap.parse_args()
    python = Path(args.peer_envs) / "saelens" / "bin" / "python"
    if not python.exists():
        sys.exit(f"no SAELens venv at {python}; create it as experiments/peers/README.md says")
    work = Path(args.work or tempfile.mkdtemp(prefix="saelens_interop_"))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(512, D_IN, generator=g) * 3 + torch.randn(D_IN, generator=g) * 5  # raw (unnormalised) scale
    work.mkdir(parents=True, exist_ok=True)
    np.save(work / "inputs.npy", x.numpy())
    save_ours(work, x)
    subprocess.run([str(python), str(HERE / "peers" / "saelens_interop.py"), str(work)], check=True)
    version = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('sae-lens'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    rows = report(work, x)
    print(
        f"SAELens {version}; relative max |difference| of codes and reconstructions (tolerance {TOL:g}); "
        f"work dir {work}"
    )
    print("| direction | SAE | codes | reconstruction | ok |\n|---|---|---:|---:|---|")
    for direction, name, dz, dx, ok in rows:
        print(f"| {direction} | {name} | {dz} | {dx} | {'yes' if ok else 'NO'} |")
    return 0 if all(r[-1] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
