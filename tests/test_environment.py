"""pyproject.toml and environment.yml describe one environment."""

import re
import tomllib

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


def test_torch_range_admits_the_tested_release(root):
    deps = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    torch_spec = next(d for d in deps if d.startswith("torch>="))
    assert "<2.15" in torch_spec
