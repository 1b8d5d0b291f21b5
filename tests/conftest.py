import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_model():
    from tiny import tiny_llama

    return tiny_llama()


@pytest.fixture(scope="session")
def embedded_model():
    """The real embedded SmolLM2-135M model (built into the user cache on first use)."""
    from sae_lab.models import load_model

    return load_model("embedded", device="cpu")
