"""Declared dependencies: ranges, not pins; lower bounds that match what CI tests as the lowest.

scripts/check_lowest.sh runs this file (and the env tests) on the versions in
constraints/lowest.txt; the main CI run checks the same facts on the newest versions.
"""

import inspect
import re

import pytest
from conftest import REPO

tomllib = pytest.importorskip("tomllib")


def project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def requirement(name: str, reqs: list[str]) -> str:
    found = [r for r in reqs if re.match(rf"{re.escape(name)}\b", r, re.I)]
    assert len(found) == 1, f"{name} declared {len(found)} times in {reqs}"
    return found[0]


def pins(path: str) -> dict[str, str]:
    out = {}
    for line in (REPO / path).read_text().splitlines():
        m = re.match(r"\s*([A-Za-z0-9_.-]+)==(\S+)", line)
        if m:
            out[m[1].lower()] = m[2]
    return out


def test_torch_is_a_range_and_ci_pins_it_in_a_constraints_file():
    req = requirement("torch", project()["dependencies"])
    assert "==" not in req and re.search(r">=\s*2\.6\b", req), req
    assert re.fullmatch(r"\d+\.\d+\.\d+", pins("constraints/ci.txt")["torch"])
    setup = (REPO / "scripts" / "setup.sh").read_text()
    assert "constraints/ci.txt" in setup and "download.pytorch.org/whl/cpu" in setup


def test_lower_bounds_are_the_versions_ci_tests_as_lowest():
    deps = project()["dependencies"]
    lowest = pins("constraints/lowest.txt")
    assert set(lowest) == {"gymnasium", "ale-py", "minigrid"}
    for name, version in lowest.items():
        bound = re.search(r">=\s*([\d.]+)", requirement(name, deps))[1]
        pad = lambda v: tuple(int(x) for x in v.split(".")) + (0,) * (3 - len(v.split(".")))
        assert pad(bound) == pad(version), f"{name}: pyproject says >={bound}, CI tests {version}"


def test_pillow_and_safetensors_are_declared_and_ray_only_in_its_extra():
    p = project()
    requirement("pillow", p["dependencies"])
    requirement("safetensors", p["dependencies"])
    extras = p["optional-dependencies"]
    assert not any(r.lower().startswith("ray") for r in p["dependencies"] + extras["test"])
    requirement("ray", extras["ray"])
    assert "test,ray" in (REPO / ".ci" / "run").read_text()


def test_installed_libraries_have_what_btcli_uses():
    import ale_py
    import gymnasium as gym
    import minigrid  # noqa: F401  (registers its ids on import from 3.0)
    from gymnasium.vector import AutoresetMode

    assert "autoreset_mode" in inspect.signature(ale_py.AtariVectorEnv.__init__).parameters
    assert AutoresetMode.SAME_STEP is not None
    assert "MiniGrid-FourRooms-v0" in gym.registry
