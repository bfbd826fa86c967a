"""pyproject.toml and environment.yml describe one environment, and the installed torch and torchvision are inside it."""

import re
import tomllib
from importlib import metadata

import pytest
from packaging.requirements import Requirement

CONDA_NAMES = {"torch": "pytorch"}


def test_environment_yml_lists_every_dependency(root):
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    deps = project["dependencies"] + project["optional-dependencies"]["dev"]
    env = (root / "environment.yml").read_text()
    listed = dict(re.findall(r"^\s*-\s*([A-Za-z0-9_.-]+)([<>=!,.0-9]*)\s*$", env, re.M))
    for dep in deps:
        name, spec = re.match(r"([A-Za-z0-9_.-]+)(.*)", dep).groups()
        conda = CONDA_NAMES.get(name, name)
        assert conda in listed, f"{name} is in pyproject.toml but not in environment.yml"
        assert listed[conda] == spec, f"{name}: pyproject says {spec!r}, environment.yml says {listed[conda]!r}"
    assert "python=3.11" in env and "-e ." in env


@pytest.mark.parametrize("name", ["torch", "torchvision"])
def test_installed_release_is_inside_the_declared_range(root, name):
    """The torch and torchvision this suite runs on satisfy pyproject's specifiers: a release outside the range
    (too new, or too old) is untested by definition, and the range must then be moved or the install fixed."""
    deps = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    (requirement,) = [Requirement(d) for d in deps if Requirement(d).name == name]
    installed = metadata.version(name)
    assert requirement.specifier, f"pyproject.toml gives {name} no version range"
    assert requirement.specifier.contains(installed, prereleases=True), (
        f"installed {name} {installed} is outside pyproject.toml's {requirement}")
