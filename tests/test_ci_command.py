"""`.ci/run` runs exactly the README's test command (the README says so)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readmes_test_command():
    command = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    section = (ROOT / "README.md").read_text().split("**The tests**", 1)[1]
    block = section.split("```bash\n", 1)[1].split("\n```", 1)[0]
    assert block == command
