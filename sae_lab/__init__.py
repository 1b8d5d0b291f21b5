"""sae-lab: sparse autoencoders on language-model activations.

Top-level shortcuts (their modules are imported on first use, so `import sae_lab` stays fast):
``load_sae(path)``, ``load_model(name)``.
"""

__version__ = "0.1.0"
__all__ = ["load_sae", "load_model", "__version__"]


def load_sae(path, device=None, sae_id=None):
    """Load an SAE directory (ours or SAELens format), the only SAE of a run directory, or a published SAE:
    ``load_sae("gemma-scope-2b-pt-res", sae_id="layer_12/width_16k/average_l0_82")`` (also spelt
    ``"RELEASE:SAE_ID"``; see sae_lab.pretrained). ``sae_lab.pretrained.resolve_release`` also gives its model."""
    from sae_lab.pretrained import is_release_target, parse_target, resolve_release

    if sae_id is not None or is_release_target(path):
        name, parsed = parse_target(path) if sae_id is None else (str(path), sae_id)
        found = resolve_release(name, parsed, device=device)
        if len(found) != 1:
            from sae_lab.configbase import ConfigError

            raise ConfigError(
                f"'{path}' selects {len(found)} SAEs; load_sae loads one (use "
                "sae_lab.pretrained.resolve_release for several)"
            )
        return found[0].sae
    from sae_lab.pretrained.model_names import recorded_model
    from sae_lab.saeref import resolve_one

    sae_dir = resolve_one(path).dir
    sae = sae_dir.load(device=device)
    sae.model_name = recorded_model(sae_dir.path)  # the model its cfg.json names, if any
    return sae


def __getattr__(name: str):
    if name == "load_model":
        from sae_lab.models import load_model

        return load_model
    raise AttributeError(f"module 'sae_lab' has no attribute '{name}'")
