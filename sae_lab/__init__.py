"""sae-lab: sparse autoencoders on language-model activations.

Top-level shortcuts (imported lazily, so `import sae_lab` stays fast):
``load_sae(path)``, ``load_model(name)``.
"""

__version__ = "0.1.0"
__all__ = ["load_sae", "load_model", "__version__"]


def __getattr__(name: str):
    if name == "load_sae":
        from sae_lab.saes.saelens_format import load_sae

        return load_sae
    if name == "load_model":
        from sae_lab.models import load_model

        return load_model
    raise AttributeError(f"module 'sae_lab' has no attribute '{name}'")
