"""EleutherAI sparsify (PyPI: eai-sparsify): TopK SAE, one epoch on cached activations.

Run with the sparsify venv's python (see experiments/peers/README.md).

sparsify's ``Trainer`` only trains on a live HuggingFace model (it hooks the model's modules), so for
cached activations we drive its public pieces exactly as ``Trainer`` does for ``loss_fn="fvu"`` with its
default ``optimizer="signum"`` (sparsify 1.3.x, ``trainer.py``):
  - ``Sae(d_in, SaeConfig(num_latents=..., k=...), dtype=float32)`` built under ``torch.manual_seed``;
  - on the first batch, ``b_dec`` = the batch mean;
  - per batch: ``set_decoder_norm_to_unit_norm()``; ``out = sae(x)`` (fused TopK encoder with its sparse
    backward; ``out.fvu`` normalised by the batch variance); ``out.fvu.backward()``;
    ``remove_gradient_parallel_to_decoder_directions()``; optimiser step; zero_grad;
  - optimiser: ``ScheduleFreeWrapper(SignSGD(params, lr), momentum=0.95)`` in train mode, lr defaulting to
    ``5e-3 / sqrt(num_latents / 2**14)``; no grad clipping, no lr schedule (schedule-free);
  - AuxK is off (``TrainConfig.auxk_alpha`` defaults to 0.0), so no dead mask is passed.
Before evaluating, ``opt.eval()`` swaps in the schedule-free averaged weights, as sparsify does before
saving a checkpoint. Held-out codes come from ``sae.encode`` / ``sae.decode``.
"""

from __future__ import annotations

import torch
from _common import dist_version, heldout_metrics, load_data, make_batches, parse_args, timer, write_result


def sparsify_trainer(d_in: int, d_sae: int, k: int, lr: float | None = None, device="cpu"):
    """(sae, opt, lr, step) with ``step(x, first)`` one step of sparsify's Trainer recipe (module docstring).
    experiments/bench_gpu.py drives the same step on a GPU."""
    from schedulefree import ScheduleFreeWrapper
    from sparsify import Sae, SaeConfig
    from sparsify.sign_sgd import SignSGD

    cfg = SaeConfig(num_latents=d_sae, k=k)  # activation="topk", normalize_decoder=True
    sae = Sae(d_in, cfg, device=device, dtype=torch.float32)
    lr = lr if lr is not None else 5e-3 / (sae.num_latents / 2**14) ** 0.5
    opt = ScheduleFreeWrapper(SignSGD([dict(params=sae.parameters(), lr=lr)]), momentum=0.95)
    opt.train()

    def step(x: torch.Tensor, first: bool) -> None:
        if first:
            sae.b_dec.data = x.mean(0).to(sae.dtype)
        if sae.cfg.normalize_decoder:
            sae.set_decoder_norm_to_unit_norm()
        out = sae(x)
        loss = out.fvu + out.multi_topk_fvu / 8  # exactly Trainer's loss with auxk_alpha=0
        loss.backward()
        if sae.cfg.normalize_decoder:
            sae.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        opt.zero_grad()

    return sae, opt, lr, step


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], "sparsify's signum default 5e-3 / sqrt(d_sae / 2**14)")
    train, heldout = load_data(args)
    d_in = train.shape[1]
    batches = make_batches(train, args.batch, args.epochs)

    torch.manual_seed(args.seed)
    sae, opt, lr, step_fn = sparsify_trainer(d_in, args.d_sae, args.k, args.lr)
    with timer() as t:
        for step, x in enumerate(batches):
            step_fn(x, step == 0)
    n_train = len(batches) * args.batch

    opt.eval()  # schedule-free: evaluate the averaged iterate, as sparsify's checkpoints hold

    def recon_and_active(x: torch.Tensor):
        top_acts, top_indices, _ = sae.encode(x)
        x_hat = sae.decode(top_acts, top_indices)
        active = torch.zeros(args.d_sae, dtype=torch.bool)
        active[top_indices[top_acts > 0]] = True
        return x_hat, active

    metrics = heldout_metrics(heldout, recon_and_active, args.d_sae, args.eval_chunk)
    write_result(
        args,
        {
            "library": "eai-sparsify",
            "version": dist_version("eai-sparsify"),
            "arch": "topk",
            "tokens_per_s": n_train / t["seconds"],
            "train_seconds": t["seconds"],
            "n_train": n_train,
            "lr": lr,
            "optimizer": "ScheduleFreeWrapper(SignSGD, momentum=0.95) [signum]",
            **metrics,
        },
    )


if __name__ == "__main__":
    main()
