"""Small real run directories for the dashboard tests: a run trained by the pipeline, evaluated and analysed.

``tiny_run`` uses a tiny random Llama saved as a local Hugging Face directory (so the app loads it by path,
as it would any local model); ``embedded_run`` trains on the real embedded model (for the browser test).
"""

from __future__ import annotations

from pathlib import Path

import yaml

SAES = [
    {"architecture": "topk", "name": "topk_k8", "expansion_factor": 2, "k": 8},
    {"architecture": "feature_choice", "name": "feature_choice_k8", "expansion_factor": 2, "k": 8},
]


def save_tiny_model(where: Path) -> Path:
    """A tiny random Llama + tokenizer written with save_pretrained (loadable by `load_model(path)`)."""
    from tiny import tiny_hf

    model, tok = tiny_hf(n_layers=2, d_model=64)
    model.save_pretrained(where)
    tok.save_pretrained(where)
    return where


def run_config(
    run_dir: Path,
    model: str,
    hook: str,
    context_length: int,
    train_tokens: int,
    eval_tokens: int,
    analyze_tokens: int,
    saes: list[dict] = SAES,
    seed: int = 0,
) -> dict:
    data = {"source": "embedded", "split": "train", "context_length": context_length, "max_tokens": train_tokens}
    held_out = {"data": {**data, "split": "validation"}, "n_tokens": eval_tokens, "batch_size": 4}
    return {
        "run_dir": str(run_dir),
        "model": {"name": model, "device": "cpu"},
        "data": data,
        "activations": {"hooks": [hook], "batch_size": 8},
        "cache": {
            "path": str(run_dir.parent / f"{run_dir.name}_cache"),
            "shard_contexts": 16,
            "verify": "quick",
            "buffer_tokens": train_tokens,
        },
        "train": {
            "batch_size": 256,
            "total_tokens": train_tokens,
            "log_every_steps": 2,
            "seed": seed,
            "b_dec_init_tokens": 256,
        },
        "saes": saes,
        "eval": held_out,
        "analyze": {
            **held_out,
            "n_tokens": analyze_tokens,
            "top_k": 6,
            "context_left": 4,
            "context_right": 2,
            "n_intervals": 4,
            "samples_per_interval": 2,
            "hist_bins": 16,
            "n_neighbours": 4,
            "n_cooccurring": 4,
            "n_logits": 5,
        },
    }


def build_run(cfg_dict: dict, config_path: Path) -> Path:
    """Run the whole pipeline (train, eval, analyze) on a config dict; returns the run directory."""
    from sae_lab.configbase import load_config
    from sae_lab.pipeline import RunConfig, run_all

    config_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.write_text(yaml.safe_dump(cfg_dict))
    lines: list[str] = []
    run_all(load_config(RunConfig, str(config_path), []), report=lines.append)
    run_dir = Path(cfg_dict["run_dir"])
    (run_dir.parent / "report.txt").write_text("\n".join(lines))  # what `sae-lab run` printed
    return run_dir


def tiny_run(root: Path) -> Path:
    model = save_tiny_model(root / "tiny_model")
    cfg = run_config(root / "run", str(model), "blocks.1.hook_resid_post", 32, 4096, 512, 1024)
    return build_run(cfg, root / "run.yaml")


def embedded_run(root: Path) -> Path:
    """Two small SAEs (TopK, Feature Choice) on layer-3 residuals of the real embedded model, evaluated and analysed
    (~1 min on 2 cores)."""
    cfg = run_config(root / "run", "embedded", "blocks.3.hook_resid_post", 64, 8192, 256, 2048)
    return build_run(cfg, root / "run.yaml")


def hook_z_sae_dir(root: Path, model_dir: Path) -> Path:
    """A standalone SAE directory on the tiny model's ``blocks.1.attn.hook_z`` with its feature database (the
    dashboard opens it with ``--model model_dir``, as it would a SAELens-format SAE)."""
    import torch

    from sae_lab.evaluation import AnalyzeConfig, analyze_sae_dir
    from sae_lab.models import load_model
    from sae_lab.saedir import SAEDir
    from sae_lab.saes import SAEConfig, build_sae

    torch.manual_seed(0)
    sae = build_sae(
        SAEConfig(architecture="topk", d_in=64, d_sae=96, k=6, hook_name="blocks.1.attn.hook_z", name="attn_z")
    )
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.02)
    out = SAEDir(root / "attn_z").save(sae)
    held_out = run_config(root, "x", "x", 32, 1, 256, 512)["analyze"]
    analyze_sae_dir(out, load_model(str(model_dir), "cpu"), AnalyzeConfig(**held_out))
    return out
