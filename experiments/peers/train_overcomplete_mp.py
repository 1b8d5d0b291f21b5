"""overcomplete (PyPI: overcomplete): MpSAE (matching pursuit), one epoch on cached activations.

Run with the overcomplete venv's python (see experiments/peers/README.md).

  - ``MpSAE(d_in, nb_concepts=d_sae, k=k, device="cpu")``: default ``"identity"`` encoder, k greedy steps
    each recomputing ``residual @ W.T`` (argmax of the signed correlation), dictionary rows
    L2-normalised by ``DictionaryLayer``, gradients through the unrolled steps;
  - ``train_sae(sae, batches, mse, Adam(lr=5e-4), nb_epochs=1, clip_grad=1.0, monitoring=0)``, the same
    recipe as the README's TopK example (MpSAE has no dedicated loss in overcomplete).
Held-out codes come from ``sae.encode`` / ``sae.decode`` in eval mode (no dropout, fused dictionary).
A latent counts as active when its MP coefficient is nonzero (MpSAE's coefficients may be negative).
"""

from __future__ import annotations

from _common import parse_args
from _overcomplete import import_overcomplete_sae, train_and_report


def mse(x, x_hat, pre_codes, codes, dictionary):
    return (x - x_hat).square().mean()


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], "overcomplete README's 5e-4 (Adam)")
    oc_sae = import_overcomplete_sae()
    train_and_report(
        args,
        lambda d_in: oc_sae.MpSAE(d_in, nb_concepts=args.d_sae, k=args.k, device="cpu"),
        mse,
        "mp",
        "Adam, clip_grad 1.0, criterion=mse [train_sae]",
    )


if __name__ == "__main__":
    main()
