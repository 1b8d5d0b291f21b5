"""The SAELens side of `experiments/check_saelens_interop.py`; run with the saelens venv's python.

    <saelens venv>/bin/python experiments/peers/saelens_interop.py WORK_DIR

1. Loads every sae-lab directory in WORK_DIR/ours/ with SAELens's own ``SAE.load_from_disk`` and writes its
   codes and reconstructions of WORK_DIR/inputs.npy to WORK_DIR/ours/<name>/saelens_{codes,recon}.npy (or the
   error to saelens_error.txt).
2. Builds one SAELens SAE per architecture it shares with sae-lab (random weights), saves it with SAELens's
   ``save_model`` into WORK_DIR/theirs/<name>/ and writes its codes and reconstructions of the same inputs.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

import numpy as np
import torch
from sae_lens import (
    SAE,
    JumpReLUSAE,
    JumpReLUSAEConfig,
    MatchingPursuitSAE,
    MatchingPursuitSAEConfig,
    StandardSAE,
    StandardSAEConfig,
    TopKSAE,
    TopKSAEConfig,
)


def outputs(sae, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        z = sae.encode(x)
        return z.numpy(), sae.decode(z).numpy()


def load_ours(work: Path, x: torch.Tensor) -> None:
    for d in sorted((work / "ours").iterdir()):
        try:
            z, x_hat = outputs(SAE.load_from_disk(d), x)
            np.save(d / "saelens_codes.npy", z)
            np.save(d / "saelens_recon.npy", x_hat)
        except Exception:  # noqa: BLE001 - reported back to the driver
            (d / "saelens_error.txt").write_text(traceback.format_exc())


def their_saes(d_in: int, d_sae: int) -> dict:
    """One SAELens SAE per shared architecture, with random weights (unit-norm decoder rows for MP)."""
    common = dict(d_in=d_in, d_sae=d_sae, dtype="float32", device="cpu")
    saes = {
        "topk": TopKSAE(TopKSAEConfig(k=8, **common)),
        "jumprelu": JumpReLUSAE(JumpReLUSAEConfig(**common)),
        "standard": StandardSAE(StandardSAEConfig(**common)),
        "matching_pursuit": MatchingPursuitSAE(
            MatchingPursuitSAEConfig(residual_threshold=0.5, max_iterations=24, **common)
        ),
    }
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for sae in saes.values():
            for name, p in sae.named_parameters():
                p.copy_(torch.randn(p.shape, generator=g) * (0.2 if name == "threshold" else 1.0))
                if name == "threshold":
                    p.abs_()
            sae.W_dec.div_(sae.W_dec.norm(dim=1, keepdim=True))
    return saes


def save_theirs(work: Path, x: torch.Tensor) -> None:
    for name, sae in their_saes(x.shape[1], 256).items():
        d = work / "theirs" / name
        sae.save_model(d)
        z, x_hat = outputs(sae, x)
        np.save(d / "saelens_codes.npy", z)
        np.save(d / "saelens_recon.npy", x_hat)


def main() -> None:
    work = Path(sys.argv[1])
    x = torch.from_numpy(np.load(work / "inputs.npy"))
    load_ours(work, x)
    save_theirs(work, x)


if __name__ == "__main__":
    main()
