"""Put plugin packages on the entry-point path without pip: copy the package into a folder and
write the `*.dist-info` (METADATA + entry_points.txt) pip would write, taken from its pyproject.toml.
That folder on sys.path / PYTHONPATH is what `pip install --target` produces."""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

EXAMPLE_PLUGIN = Path(__file__).resolve().parents[1] / "evals" / "plugins" / "example_plugin"


def install_plugin(site: Path, project: Path) -> None:
    meta = tomllib.loads((project / "pyproject.toml").read_text())["project"]
    for pkg in project.iterdir():
        if pkg.is_dir() and (pkg / "__init__.py").exists():
            shutil.copytree(pkg, site / pkg.name, ignore=shutil.ignore_patterns("__pycache__"))
    write_dist_info(site, meta["name"], meta["version"], meta["entry-points"])


def write_dist_info(site: Path, name: str, version: str, entry_points: dict[str, dict[str, str]]) -> None:
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = []
    for group, eps in entry_points.items():
        lines.append(f"[{group}]")
        lines += [f"{k} = {v}" for k, v in eps.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")


def fake_plugin(site: Path, dist: str, module: str, source: str, entry_points: dict[str, str]) -> None:
    """A one-module plugin distribution `dist` whose module holds `source`."""
    (site / f"{module}.py").write_text(source)
    write_dist_info(site, dist, "0.1.0", {"saebench_scaffold.tasks": entry_points})
