"""Import ``overcomplete.sae`` without overcomplete's top-level ``__init__``.

overcomplete 0.3.0's ``overcomplete/__init__.py`` eagerly imports its vision model zoo
(``overcomplete.models`` -> torchvision, timm). PyPI's torchvision wheels are CUDA builds whose C
extension cannot load next to the CPU torch 2.13.0 used here ("operator torchvision::nms does not
exist"), and installing them pulls a CUDA torch. The SAE code (``overcomplete.sae``: TopKSAE, MpSAE,
train_sae) needs none of that, so the venv installs overcomplete with ``--no-deps`` plus the few
packages the SAE path imports (einops, numpy, scipy, scikit-learn), and this helper registers a bare
``overcomplete`` package (same directory, no ``__init__`` side effects) before importing
``overcomplete.sae``. The SAE classes and trainer are the library's own, unmodified.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types


def import_overcomplete_sae():
    try:
        return importlib.import_module("overcomplete.sae")
    except (ImportError, RuntimeError, OSError):
        for name in [m for m in sys.modules if m == "overcomplete" or m.startswith("overcomplete.")]:
            del sys.modules[name]
    spec = importlib.util.find_spec("overcomplete")  # locates the package without executing it
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("overcomplete is not installed in this environment")
    pkg = types.ModuleType("overcomplete")
    pkg.__path__ = list(spec.submodule_search_locations)
    pkg.__file__ = spec.origin
    pkg.__package__ = "overcomplete"
    pkg.__spec__ = spec
    sys.modules["overcomplete"] = pkg
    return importlib.import_module("overcomplete.sae")


def train_and_report(args, make_sae, criterion, arch: str, note: str) -> None:
    """Shared body of the overcomplete runners: train one epoch with ``train_sae``, evaluate, write JSON.

    ``make_sae(d_in)`` builds the library's SAE (seeded here); ``criterion`` is the loss given to train_sae.
    """
    import torch
    from _common import active_from_dense, dist_version, heldout_metrics, load_data, make_batches, timer, write_result

    train_sae = import_overcomplete_sae().train_sae
    train, heldout = load_data(args)
    batches = make_batches(train, args.batch, 1)
    n_train = len(batches) * args.batch * args.epochs
    lr = args.lr if args.lr is not None else 5e-4
    torch.manual_seed(args.seed)
    sae = make_sae(train.shape[1])
    optimizer = torch.optim.Adam(sae.parameters(), lr=lr)
    with timer() as t:
        train_sae(
            sae,
            batches,
            criterion,
            optimizer,
            scheduler=None,
            nb_epochs=args.epochs,
            clip_grad=1.0,
            monitoring=0,
            device="cpu",
        )
    sae.eval()

    def recon_and_active(x: torch.Tensor):
        _, z = sae.encode(x)
        return sae.decode(z), active_from_dense(z)

    metrics = heldout_metrics(heldout, recon_and_active, args.d_sae, args.eval_chunk)
    write_result(
        args,
        {
            "library": "overcomplete",
            "version": dist_version("overcomplete"),
            "arch": arch,
            "tokens_per_s": n_train / t["seconds"],
            "train_seconds": t["seconds"],
            "n_train": n_train,
            "lr": lr,
            "optimizer": note,
            **metrics,
        },
    )
