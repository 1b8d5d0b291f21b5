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

import torch

from _overcomplete import import_overcomplete_sae
from _common import active_from_dense, dist_version, heldout_metrics, load_data, make_batches, parse_args, timer, write_result


def main() -> None:
    criterion_name = "mse"
    if "--criterion" in sys.argv:  # runner-specific flag, kept out of the shared CLI
        i = sys.argv.index("--criterion")
        criterion_name = sys.argv[i + 1]
        del sys.argv[i : i + 2]
    args = parse_args(__doc__.splitlines()[0], "overcomplete README's 5e-4 (Adam)")
    oc_sae = import_overcomplete_sae()
    TopKSAE, train_sae = oc_sae.TopKSAE, oc_sae.train_sae
    from overcomplete.sae.losses import top_k_auxiliary_loss

    def mse(x, x_hat, pre_codes, codes, dictionary):
        return (x - x_hat).square().mean()

    criterion = {"mse": mse, "auxk": top_k_auxiliary_loss}[criterion_name]

    train, heldout = load_data(args)
    d_in = train.shape[1]
    batches = make_batches(train, args.batch, 1)
    n_train = len(batches) * args.batch * args.epochs
    lr = args.lr if args.lr is not None else 5e-4

    torch.manual_seed(args.seed)
    sae = TopKSAE(d_in, nb_concepts=args.d_sae, top_k=args.k, device="cpu")
    optimizer = torch.optim.Adam(sae.parameters(), lr=lr)

    with timer() as t:
        train_sae(sae, batches, criterion, optimizer, scheduler=None, nb_epochs=args.epochs,
                  clip_grad=1.0, monitoring=0, device="cpu")

    sae.eval()

    def recon_and_active(x: torch.Tensor):
        _, z = sae.encode(x)
        return sae.decode(z), active_from_dense(z)

    metrics = heldout_metrics(heldout, recon_and_active, args.d_sae, args.eval_chunk)
    write_result(args, {
        "library": "overcomplete",
        "version": dist_version("overcomplete"),
        "arch": "topk",
        "tokens_per_s": n_train / t["seconds"],
        "train_seconds": t["seconds"],
        "n_train": n_train,
        "lr": lr,
        "optimizer": f"Adam, clip_grad 1.0, criterion={criterion_name} [train_sae]",
        **metrics,
    })


if __name__ == "__main__":
    main()
