"""overcomplete (PyPI: overcomplete): TopKSAE, one epoch on cached activations.

Run with the overcomplete venv's python (see experiments/peers/README.md).

Follows overcomplete's README recipe for a TopK SAE on activations:
  - ``TopKSAE(d_in, nb_concepts=d_sae, top_k=k, device="cpu")`` (default ``"linear"`` encoder: Linear +
    ReLU, then top-k; dictionary rows L2-normalised by ``DictionaryLayer``; no decoder bias);
  - ``train_sae(sae, batches, criterion, Adam(lr=5e-4), nb_epochs=1, clip_grad=1.0, monitoring=0)`` with the
    README's criterion ``mse = (x - x_hat).square().mean()``. ``--criterion auxk`` uses the library's
    ``overcomplete.sae.losses.top_k_auxiliary_loss`` instead.
``train_sae`` is given the list of pre-cut batch tensors as its "dataloader" (it accepts any iterable of
tensors), so no DataLoader collation is timed; ``monitoring=0`` skips its per-step R2/logging extras.
Held-out codes come from ``sae.encode`` / ``sae.decode`` in eval mode (fused dictionary).
"""

from __future__ import annotations

import sys

from _common import parse_args
from _overcomplete import import_overcomplete_sae, train_and_report


def mse(x, x_hat, pre_codes, codes, dictionary):
    return (x - x_hat).square().mean()


def main() -> None:
    criterion_name = "mse"
    if "--criterion" in sys.argv:  # runner-specific flag, kept out of the shared CLI
        i = sys.argv.index("--criterion")
        criterion_name = sys.argv[i + 1]
        del sys.argv[i : i + 2]
    args = parse_args(__doc__.splitlines()[0], "overcomplete README's 5e-4 (Adam)")
    oc_sae = import_overcomplete_sae()
    from overcomplete.sae.losses import top_k_auxiliary_loss

    criterion = {"mse": mse, "auxk": top_k_auxiliary_loss}[criterion_name]
    train_and_report(
        args,
        lambda d_in: oc_sae.TopKSAE(d_in, nb_concepts=args.d_sae, top_k=args.k, device="cpu"),
        criterion,
        "topk",
        f"Adam, clip_grad 1.0, criterion={criterion_name} [train_sae]",
    )


if __name__ == "__main__":
    main()
