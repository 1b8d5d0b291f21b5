"""The user guide docs/circuits.md: its Python code blocks run, in order, in one namespace."""

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.embedded
GUIDE = Path(__file__).parent.parent / "docs" / "circuits.md"


def test_the_circuits_guide_code_blocks_run(embedded_model):
    blocks = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), flags=re.S)
    assert len(blocks) >= 6
    ns: dict = {}
    for i, code in enumerate(blocks):
        code = code.replace('load_model("embedded")', "_model")  # the session's model: the same, loaded once
        ns["_model"] = embedded_model
        exec(compile(code, f"{GUIDE.name} block {i + 1}", "exec"), ns)
    assert -1 <= ns["check"]["pearson"] <= 1 and ns["r"]["after"]["logit_diff"] is not None
