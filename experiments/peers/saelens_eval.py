"""SAELens side of experiments/check_saelens_eval.py: SAELens's own eval code on sae-lab SAEs and token batches.

Run with the `saelens` venv's python (see README.md here):

    saelens_eval.py --model-dir STORE --tokens tokens.npy --batch-size 8 --sae NAME=DIR [--sae ...] --out out.json

- The model: a TransformerLens 3 ``HookedTransformer`` of the Hugging Face Llama in STORE (the embedded model's
  safetensors store: config.json, model.safetensors, tokenizer), built as ``from_pretrained_no_processing`` builds
  one (that function takes official model names only): TransformerLens's config and weight conversion of the
  local directory, no norm folding or centring, so activations and logits are the Hugging Face model's up to float
  rounding; the tokenizer is ``AutoTokenizer.from_pretrained(STORE)``.
- Each SAE: ``sae_lens.SAE.load_from_disk(DIR)``.
- The eval: ``sae_lens.evals.run_evals`` with CE, KL, variance and sparsity metrics on, its default
  ``exclude_special_tokens=True``, ``n_eval_reconstruction_batches`` = ``n_eval_sparsity_variance_batches`` = the
  number of batches in tokens.npy; an activation-store stand-in serves those batches in order (the only
  ``ActivationsStore`` methods ``run_evals`` calls: ``get_batch_tokens``, ``reset_input_dataset``, and the
  ``context_size`` / ``store_batch_size_prompts`` fields).
Writes {sae_lens_version, transformer_lens_version, ignored_token_ids, saes: {NAME: flat metrics}}.
"""

from __future__ import annotations

import argparse
import json
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch


class TokenBatches:
    """The fields and methods of ``sae_lens.training.activations_store.ActivationsStore`` that ``run_evals`` uses."""

    def __init__(self, tokens: np.ndarray, batch_size: int):
        self.tokens = torch.as_tensor(tokens, dtype=torch.long)
        self.store_batch_size_prompts = batch_size
        self.context_size = tokens.shape[1]
        self.next = 0

    def get_batch_tokens(self, batch_size: int) -> torch.Tensor:
        batch = self.tokens[self.next : self.next + batch_size]
        if len(batch) != batch_size:
            raise RuntimeError(f"run_evals asked for more batches than tokens.npy holds (at row {self.next})")
        self.next += batch_size
        return batch

    def reset_input_dataset(self) -> None:
        self.next = 0


def load_model(store: Path):
    """TransformerLens 3's HookedTransformer of the Hugging Face model in ``store`` (weights as they are).

    ``HookedTransformer.from_pretrained`` accepts only official model names, so this does its steps with the local
    directory, which TransformerLens's config and state-dict loaders accept: config, converted weights, the model,
    and the state dict loaded without any folding or centring (``from_pretrained_no_processing``'s flags)."""
    from transformer_lens import HookedTransformer
    from transformer_lens import loading_from_pretrained as loading
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf = AutoModelForCausalLM.from_pretrained(str(store), dtype=torch.float32).eval()
    cfg = loading.get_pretrained_model_config(str(store), device="cpu", dtype=torch.float32)
    state = loading.get_pretrained_state_dict(str(store), cfg, hf, dtype=torch.float32)
    model = HookedTransformer(cfg, AutoTokenizer.from_pretrained(str(store)), move_to_device=False)
    model.load_and_process_state_dict(
        state,
        fold_ln=False,
        center_writing_weights=False,
        center_unembed=False,
        fold_value_biases=False,
        refactor_factored_attn_matrices=False,
    )
    return model.eval()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--tokens", required=True)
    ap.add_argument("--batch-size", type=int, required=True)
    ap.add_argument("--sae", action="append", required=True, help="NAME=DIR")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    from sae_lens import SAE
    from sae_lens.evals import EvalConfig, run_evals
    from sae_lens.training.activation_scaler import ActivationScaler
    from sae_lens.util import get_special_token_ids

    torch.set_grad_enabled(False)
    model = load_model(Path(args.model_dir))
    tokens = np.load(args.tokens)
    n_batches = len(tokens) // args.batch_size
    store = TokenBatches(tokens[: n_batches * args.batch_size], args.batch_size)
    cfg = EvalConfig(
        batch_size_prompts=args.batch_size,
        n_eval_reconstruction_batches=n_batches,
        compute_kl=True,
        compute_ce_loss=True,
        n_eval_sparsity_variance_batches=n_batches,
        compute_l2_norms=True,
        compute_sparsity_metrics=True,
        compute_variance_metrics=True,
    )
    out = {
        "sae_lens_version": version("sae-lens"),
        "transformer_lens_version": version("transformer-lens"),
        "ignored_token_ids": sorted(int(i) for i in get_special_token_ids(model.tokenizer)),
        "saes": {},
    }
    for spec in args.sae:
        name, path = spec.split("=", 1)
        sae = SAE.load_from_disk(path, device="cpu")
        store.reset_input_dataset()
        metrics, _ = run_evals(sae, store, model, ActivationScaler(), cfg)
        out["saes"][name] = {k: v for group in metrics.values() for k, v in group.items()}
        print(name, json.dumps(out["saes"][name]), flush=True)
    Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
