"""Print pip constraints that pin dependencies to the lower bounds pyproject.toml declares.

    python .ci/min_constraints.py timm huggingface-hub ... > constraints.txt

For ``make test-min``: the suite then runs against the oldest versions ibzoo claims to support, so a
lower bound cannot drift below what the code needs. Each named package must have a ``>=`` bound in
``[project] dependencies``; the script exits with an error otherwise. Plain text parsing rather than
tomllib, which Python 3.10 lacks.
"""

import re
import sys
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def declared_minimums(pyproject: str) -> dict[str, str]:
    """{normalised name: lower bound} of every ``name>=version`` in the ``dependencies = [...]`` list."""
    block = re.search(r"^dependencies\s*=\s*\[(.*?)^\]", pyproject, re.MULTILINE | re.DOTALL)
    if block is None:
        raise SystemExit(f"{PYPROJECT}: no `dependencies = [...]` list found.")
    minimums = {}
    for requirement in re.findall(r'"([^"]+)"', block.group(1)):
        match = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^]]*\])?\s*(.*)", requirement)
        name, specifiers = match.group(1), match.group(2)
        lower = re.search(r">=\s*([^,;\s]+)", specifiers)
        if lower:
            minimums[re.sub(r"[-_.]+", "-", name).lower()] = lower.group(1)
    return minimums


def main(names: list[str]) -> None:
    minimums = declared_minimums(PYPROJECT.read_text())
    for name in names:
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key not in minimums:
            raise SystemExit(f"{PYPROJECT} declares no `{name}>=...` dependency.")
        print(f"{key}=={minimums[key]}")


if __name__ == "__main__":
    main(sys.argv[1:])
