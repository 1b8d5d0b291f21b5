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

import torch

from _overcomplete import import_overcomplete_sae
from _common import active_from_dense, dist_version, heldout_metrics, load_data, make_batches, parse_args, timer, write_result


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], "overcomplete README's 5e-4 (Adam)")
    oc_sae = import_overcomplete_sae()
    MpSAE, train_sae = oc_sae.MpSAE, oc_sae.train_sae

    def mse(x, x_hat, pre_codes, codes, dictionary):
        return (x - x_hat).square().mean()

    train, heldout = load_data(args)
    d_in = train.shape[1]
    batches = make_batches(train, args.batch, 1)
    n_train = len(batches) * args.batch * args.epochs
    lr = args.lr if args.lr is not None else 5e-4

    torch.manual_seed(args.seed)
    sae = MpSAE(d_in, nb_concepts=args.d_sae, k=args.k, device="cpu")
    optimizer = torch.optim.Adam(sae.parameters(), lr=lr)

    with timer() as t:
        train_sae(sae, batches, mse, optimizer, scheduler=None, nb_epochs=args.epochs,
                  clip_grad=1.0, monitoring=0, device="cpu")

    sae.eval()

    def recon_and_active(x: torch.Tensor):
        _, z = sae.encode(x)
        return sae.decode(z), active_from_dense(z)

    metrics = heldout_metrics(heldout, recon_and_active, args.d_sae, args.eval_chunk)
    write_result(args, {
        "library": "overcomplete",
        "version": dist_version("overcomplete"),
        "arch": "mp",
        "tokens_per_s": n_train / t["seconds"],
        "train_seconds": t["seconds"],
        "n_train": n_train,
        "lr": lr,
        "optimizer": "Adam, clip_grad 1.0, criterion=mse [train_sae]",
        **metrics,
    })


if __name__ == "__main__":
    main()
