"""sae-lab: sparse autoencoders on language-model activations.

Top-level shortcuts (their modules are imported on first use, so `import sae_lab` stays fast):
``load_sae(path)``, ``load_model(name)``.
"""

__version__ = "0.1.0"
__all__ = ["load_sae", "load_model", "__version__"]


def load_sae(path, device=None):
    """Load an SAE directory (ours or SAELens format), or the only SAE of a run directory."""
    from sae_lab.rundir import resolve_sae_dir
    from sae_lab.saes.saelens_format import load_sae as load_sae_dir

    return load_sae_dir(resolve_sae_dir(path), device=device)


def __getattr__(name: str):
    if name == "load_model":
        from sae_lab.models import load_model

        return load_model
    raise AttributeError(f"module 'sae_lab' has no attribute '{name}'")
