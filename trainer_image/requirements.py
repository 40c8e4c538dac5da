"""Print the pinned requirements of pyproject.toml extras, one per line, self-references expanded.

The Dockerfiles install these in a layer of their own before the sources are copied, so a code
change rebuilds only the small last layer and never re-installs torch.
Usage: python3 requirements.py PYPROJECT EXTRA [EXTRA ...]
"""

import re
import sys

import tomllib


def requirements(pyproject: dict, extras: list[str]) -> list[str]:
    name = pyproject["project"]["name"]
    groups = pyproject["project"]["optional-dependencies"]
    own = re.compile(rf"^{re.escape(name)}\[([^\]]+)\]$")
    seen, out = set(), []

    def expand(extra: str) -> None:
        if extra in seen:
            return
        if extra not in groups:
            raise SystemExit(f"no extra {extra!r} in pyproject.toml (have: {', '.join(groups)})")
        seen.add(extra)
        for req in groups[extra]:
            match = own.match(req.split(";")[0].strip())
            if match:
                for inner in match.group(1).split(","):
                    expand(inner.strip())
            elif req not in out:
                out.append(req)

    for extra in extras:
        expand(extra)
    return list(pyproject["project"].get("dependencies", [])) + out


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    with open(sys.argv[1], "rb") as f:
        print("\n".join(requirements(tomllib.load(f), sys.argv[2:])))
