"""SAELens's definitions of the eval metrics, reported beside sae-lab's own under ``saelens_*`` names.

SAELens 6 (``sae_lens.evals.run_evals`` with its default ``exclude_special_tokens=True``, which calls
``get_downstream_reconstruction_metrics`` → ``get_recons_loss`` and ``get_sparsity_and_variance_metrics``) defines,
on a batch of tokens ``[b, T]``:

- ignored positions: those holding the tokenizer's BOS, EOS, pad, SEP or decoder-start id
  (``sae_lens.util.get_special_token_ids``; chat tokens registered as additional special tokens are not ignored;
  for SmolLM2 and GPT-2-style tokenizers the same positions as sae-lab's BOS/EOS/pad). There is no outlier rule;
- splice: the SAE's reconstruction replaces the activation at every position that is not ignored, outliers
  included; ignored positions keep their clean activation;
- ablation: zeros at EVERY position, ignored ones included;
- CE (``ce_loss_without_sae`` / ``_with_sae`` / ``_with_ablation``): the per-token loss ``[b, T-1]`` (position t
  predicts token t+1), averaged over the predictions made at a non-ignored position t (the target may be special);
- KL (``kl_div_with_sae`` / ``_with_ablation``): KL(clean ‖ variant) at every position ``[b, T]``, averaged over
  the non-ignored positions, the last one included;
- every mean pools all kept elements of all batches; ``ce_loss_score`` = (CE_abl − CE_sae) / (CE_abl − CE_clean),
  ``kl_div_score`` = (KL_abl − KL_sae) / KL_abl;
- reconstruction: the non-ignored positions, outliers included; ``explained_variance`` = 1 − Σ‖x − x̂‖² / Σ‖x − μ‖²
  (μ over all those positions), ``l0``, ``mse`` = the mean over tokens of Σ_d (x − x̂)², ``cossim``.
"""

from __future__ import annotations

import numpy as np

from sae_lab.evaluation.metrics import LossStats, ReconStats

# sae_lens.util._SPECIAL_TOKEN_ATTRS (SAELens 6.54): the structural special tokens, not additional_special_tokens
SAELENS_SPECIAL_ATTRS = ("bos_token_id", "eos_token_id", "pad_token_id", "sep_token_id", "decoder_start_token_id")


def saelens_special_ids(tokenizer) -> list[int]:
    """The token ids SAELens's eval ignores: the tokenizer's BOS, EOS, pad, SEP and decoder-start ids."""
    return sorted({i for i in (getattr(tokenizer, a, None) for a in SAELENS_SPECIAL_ATTRS) if isinstance(i, int)})


def saelens_positions(tokens: np.ndarray, tokenizer) -> np.ndarray:
    """bool like ``tokens``: True where SAELens's eval splices and averages (no special token there)."""
    return ~np.isin(tokens, np.asarray(saelens_special_ids(tokenizer), dtype=tokens.dtype))


def _ratio(num: float, den: float) -> float:
    return num / den if den != 0 else float("nan")


def saelens_recon_metrics(recon: ReconStats) -> dict:
    """``saelens_explained_variance``, ``_l0``, ``_mse`` (Σ over dimensions, mean over tokens), ``_cossim``."""
    r = recon.result(dense_threshold=1.0)
    return {
        "saelens_explained_variance": 1.0 - r["fvu"],
        "saelens_l0": r["l0_mean"],
        "saelens_mse": recon.sum_err / max(recon.n, 1),
        "saelens_cossim": r["cos"],
        "saelens_tokens": recon.n,
    }


def saelens_loss_metrics(clean: LossStats, sae: LossStats, zero: LossStats) -> dict:
    """SAELens's CE and KL metrics from the sums over its positions (see the module docstring)."""
    ce_clean, ce_sae, ce_abl = clean.mean_ce, sae.mean_ce, zero.mean_ce
    return {
        "saelens_ce_loss_score": _ratio(ce_abl - ce_sae, ce_abl - ce_clean),
        "saelens_ce_loss_without_sae": ce_clean,
        "saelens_ce_loss_with_sae": ce_sae,
        "saelens_ce_loss_with_ablation": ce_abl,
        "saelens_kl_div_score": _ratio(zero.mean_kl - sae.mean_kl, zero.mean_kl),
        "saelens_kl_div_with_sae": sae.mean_kl,
        "saelens_kl_div_with_ablation": zero.mean_kl,
        "saelens_predictions": clean.n,
    }
