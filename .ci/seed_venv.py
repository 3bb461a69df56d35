"""Create a venv that already holds ibzoo's dependencies, hard-linked from the venv running this script.

    .venv/bin/python .ci/seed_venv.py DEST [--extras dev]

For ``make test-wheel`` and ``make test-min``: each needs a venv of its own, and a venv with PyTorch's
CUDA build is about 6 GB, so three full installs do not fit on some CI disks (CI failed with ``No
space left on device``). Here DEST gets exactly the distributions that ``ibzoo[EXTRAS]`` requires,
transitively (markers evaluated, plus pip itself), and nothing else -- not ibzoo, not the dev tools
unless asked -- each file hard-linked from this venv's site-packages, so it costs almost no disk.
``pip install`` into DEST then behaves as on a user's machine that already has those versions: it
installs what is missing or must change (the wheel; the minimum versions) and downloads nothing else.

Hard links are safe to share: pip removes a file before it installs a different version and writes
new files (and ``.pyc`` files) under new inodes, so nothing done in DEST changes this venv. Where a
link is impossible (DEST on another file system) the file is copied. Console scripts (``bin/``) are
not carried over; the tests call ``python -m``. Neither venv nor virtualenv nor pip can seed a venv
from another one, and uv's hard-link mode needs its own cache (a fresh 3 GB download): hence this.
"""

import argparse
import os
import re
import shutil
import sys
import sysconfig
import venv
from importlib.metadata import Distribution, PackageNotFoundError, distribution
from pathlib import Path

from packaging.requirements import Requirement


def _normalised(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def required_distributions(root: str, extras: list[str]) -> list[Distribution]:
    """The installed distributions ``root[extras]`` needs, transitively, without ``root`` itself."""
    needed: dict[str, Distribution] = {}
    pending = [(root, tuple(extras))]
    while pending:
        name, wanted_extras = pending.pop()
        for line in distribution(name).requires or []:
            requirement = Requirement(line)
            environments = [{"extra": extra} for extra in wanted_extras or ("",)]
            if requirement.marker and not any(requirement.marker.evaluate(env) for env in environments):
                continue
            key = _normalised(requirement.name)
            if key in needed:
                continue
            try:
                needed[key] = distribution(requirement.name)
            except PackageNotFoundError:
                continue  # pip installs it into DEST; this venv simply does not have it
            pending.append((requirement.name, tuple(requirement.extras)))
    needed.pop(_normalised(root), None)
    return list(needed.values())


def link_distribution(dist: Distribution, source_site: Path, dest_site: Path) -> int:
    """Hard-link (else copy) each file ``dist`` installed under ``source_site``; returns the count."""
    if dist.files is None:
        raise SystemExit(f"{dist.metadata['Name']}: no RECORD file; reinstall it in {source_site}.")
    linked = 0
    for record in dist.files:
        source = Path(dist.locate_file(record)).resolve()
        if not source.is_file() or source_site not in source.parents:
            continue  # console scripts and data files outside site-packages; files pip removed
        target = dest_site / source.relative_to(source_site)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            continue
        try:
            os.link(source, target)
        except OSError:
            shutil.copy2(source, target)
        linked += 1
    return linked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dest", type=Path, help="the venv to create (must not exist)")
    parser.add_argument("--extras", nargs="*", default=[], help="ibzoo extras to include, e.g. dev")
    args = parser.parse_args()
    if args.dest.exists():
        raise SystemExit(f"{args.dest} exists; remove it first.")

    venv.create(args.dest, with_pip=False)
    source_site = Path(sysconfig.get_paths()["purelib"]).resolve()
    dest_python = args.dest / "bin" / "python"
    dest_site = Path(
        sysconfig.get_paths(vars={"base": str(args.dest), "platbase": str(args.dest)})["purelib"]
    )
    dists = [*required_distributions("ibzoo", args.extras), distribution("pip")]
    files = sum(link_distribution(dist, source_site, dest_site) for dist in dists)
    print(
        f"seed_venv: {args.dest} holds {len(dists)} distributions ({files} files) linked from "
        f"{source_site} (python {sys.version.split()[0]}, {dest_python})"
    )


if __name__ == "__main__":
    main()
