"""SAELens (PyPI: sae-lens): TopK SAE, one epoch on cached activations.

Run with the sae-lens venv's python (sae-lens needs transformer-lens<4; see experiments/peers/README.md).

Uses SAELens's own trainer fed by a plain iterator of tensors, the way its synthetic-data helper
(``sae_lens.synthetic.training.train_toy_sae``) does:
  - ``TopKTrainingSAE(TopKTrainingSAEConfig(d_in, d_sae, k, dtype="float32", device="cpu"))`` with the
    library defaults (AuxK ``aux_loss_coefficient=1.0``, ``rescale_acts_by_decoder_norm=True``,
    ``decoder_init_norm=0.1``, ``apply_b_dec_to_input=True``, ``normalize_activations="none"``);
  - ``SAETrainer(cfg=SAETrainerConfig(...), sae=sae, data_provider=iter(batches)).fit()``: per step
    ``training_forward_pass`` (MSE + TopK aux loss), backward, ``clip_grad_norm_(1.0)``, Adam, lr scheduler,
    dead-feature bookkeeping;
  - optimiser settings are ``LanguageModelSAERunnerConfig``'s defaults: Adam lr 3e-4, betas (0.9, 0.999),
    constant schedule, no warm-up, dead_feature_window 1000, feature_sampling_window 2000; wandb off.
The timed region is ``trainer.fit()``. Held-out codes come from ``sae.encode`` / ``sae.decode``.
"""

from __future__ import annotations

import torch
from _common import (
    active_from_dense,
    dist_version,
    heldout_metrics,
    load_data,
    make_batches,
    parse_args,
    timer,
    write_result,
)


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], "SAELens runner default 3e-4 (Adam)")
    from sae_lens import LoggingConfig, SAETrainer, TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.config import SAETrainerConfig

    train, heldout = load_data(args)
    d_in = train.shape[1]
    batches = make_batches(train, args.batch, args.epochs)
    n_train = len(batches) * args.batch
    lr = args.lr if args.lr is not None else 3e-4

    torch.manual_seed(args.seed)
    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=d_in, d_sae=args.d_sae, k=args.k, dtype="float32", device="cpu"))
    trainer_cfg = SAETrainerConfig(
        total_training_samples=n_train,
        train_batch_size_samples=args.batch,
        lr=lr,
        lr_end=lr,
        lr_scheduler_name="constant",
        lr_warm_up_steps=0,
        lr_decay_steps=0,
        adam_beta1=0.9,
        adam_beta2=0.999,
        device="cpu",
        autocast=False,
        dead_feature_window=1000,
        feature_sampling_window=2000,
        n_checkpoints=0,
        checkpoint_path=None,
        save_final_checkpoint=False,
        logger=LoggingConfig(log_to_wandb=False),
    )
    trainer = SAETrainer(cfg=trainer_cfg, sae=sae, data_provider=iter(batches))

    with timer() as t:
        sae = trainer.fit()

    sae.eval()

    def recon_and_active(x: torch.Tensor):
        z = sae.encode(x)
        if z.is_sparse:
            z = z.to_dense()
        return sae.decode(z), active_from_dense(z)

    metrics = heldout_metrics(heldout, recon_and_active, args.d_sae, args.eval_chunk)
    write_result(
        args,
        {
            "library": "sae-lens",
            "version": dist_version("sae-lens"),
            "arch": "topk",
            "tokens_per_s": n_train / t["seconds"],
            "train_seconds": t["seconds"],
            "n_train": n_train,
            "lr": lr,
            "optimizer": "Adam(0.9, 0.999), constant lr, clip_grad_norm 1.0 [SAETrainer]",
            "transformer_lens": dist_version("transformer-lens"),
            **metrics,
        },
    )


if __name__ == "__main__":
    main()
