"""Both Dockerfiles install built wheels and nothing else from the checkout.

`Dockerfile` is the product's image (the `relink` wheel only);
`devtools/Dockerfile` is the workshop's (the product's wheel plus
`relink-devtools`, for the provider simulator). Every test runs on both.

No Docker engine runs on the project's machines, so the file is read: its
build stage copies what a wheel is built from and builds one; the stage that
runs installs only that wheel (no source tree in the image); every variable
it sets is a real relink setting (or one of Python's and pip's own). The
build stage's copies are replayed into an empty folder and a wheel is built
from there, so a file the wheel needs and the Dockerfile forgets shows up.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.unit.test_settings_and_compose import _env_names, _settings_classes

ROOT = Path(__file__).resolve().parents[2]
# Variables read by Python and pip themselves, not by relink.
RUNTIME_VARIABLES = {
    "PYTHONDONTWRITEBYTECODE",
    "PYTHONUNBUFFERED",
    "PIP_NO_CACHE_DIR",
    "PIP_DISABLE_PIP_VERSION_CHECK",
}


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def _stages(text: str) -> list[Stage]:
    joined = text.replace("\\\n", " ")
    stages: list[Stage] = []
    for raw in joined.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            parts = args.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(parts[0], name))
        else:
            stages[-1].instructions.append((keyword, args.strip()))
    return stages


def _env_assignments(args: str) -> dict[str, str]:
    words = shlex.split(args)
    if len(words) == 2 and "=" not in words[0]:  # legacy `ENV NAME value`
        return {words[0]: words[1]}
    return dict(word.split("=", 1) for word in words)


def _copy_args(args: str) -> tuple[list[str], list[str], str]:
    words = shlex.split(args)
    flags = [w for w in words if w.startswith("--")]
    rest = [w for w in words if not w.startswith("--")]
    return flags, rest[:-1], rest[-1]


# Each image and the distributions (wheel name prefixes) its build stage makes.
IMAGES = {
    "Dockerfile": ("relink-",),
    "devtools/Dockerfile": ("relink-", "relink_devtools-"),
}


@pytest.fixture(params=sorted(IMAGES), ids=lambda name: name.replace("/", "-"))
def dockerfile(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _image(dockerfile: str) -> tuple[list[Stage], Stage, Stage]:
    stages = _stages((ROOT / dockerfile).read_text())
    return stages, stages[0], stages[-1]


def test_two_stages_build_then_run(dockerfile: str) -> None:
    STAGES, BUILD, _ = _image(dockerfile)
    assert len(STAGES) == 2
    assert BUILD.name, "the build stage must be named for COPY --from"
    assert any("pip wheel" in run and "--no-deps" in run for run in BUILD.all("RUN"))


def test_the_runtime_stage_installs_only_the_wheel(dockerfile: str) -> None:
    _, BUILD, RUNTIME = _image(dockerfile)
    copies = [_copy_args(args) for args in RUNTIME.all("COPY") + RUNTIME.all("ADD")]
    assert copies, "the runtime stage copies nothing: where would the wheel come from?"
    for flags, _sources, _target in copies:
        assert f"--from={BUILD.name}" in flags, f"the runtime stage copies the checkout: {flags}"
    installs = [run for run in RUNTIME.all("RUN") if "pip install" in run]
    assert len(installs) == 1
    targets = shlex.split(installs[0].split("pip install", 1)[1].split("&&")[0])
    assert targets and all(t.endswith(".whl") for t in targets if not t.startswith("-"))
    assert "-e" not in targets and "." not in targets
    installed = {Path(t).name.split("*")[0] for t in targets if not t.startswith("-")}
    assert installed == set(IMAGES[dockerfile])


def test_every_variable_set_is_a_real_setting(dockerfile: str) -> None:
    STAGES, _, _ = _image(dockerfile)
    known = set().union(*(_env_names(cls) for cls in _settings_classes()))
    for stage in STAGES:
        for args in stage.all("ENV"):
            for name in _env_assignments(args):
                assert name in known | RUNTIME_VARIABLES, f"ENV {name} is no setting relink reads"


def _wheel_files(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return {n for n in archive.namelist() if ".dist-info/" not in n}


def _build_wheels(sources: list[Path], out: Path) -> dict[str, set[str]]:
    """Build a wheel of each source; the files of each, by distribution prefix."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "--wheel-dir", out, *sources],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return {wheel.name.split("-")[0] + "-": _wheel_files(wheel) for wheel in out.glob("*.whl")}


@pytest.mark.slow
def test_the_build_stage_copies_everything_the_wheel_needs(dockerfile: str, tmp_path: Path) -> None:
    # Replay the build stage's COPY lines into an empty folder, then build the
    # wheels there and from the checkout: each pair must hold the same files.
    _, BUILD, _ = _image(dockerfile)
    context = tmp_path / "context"
    workdir = context  # stands for the stage's WORKDIR: the copies' targets are relative
    context.mkdir()
    for keyword, args in BUILD.instructions:
        if keyword != "COPY":
            continue
        flags, sources, target = _copy_args(args)
        assert not flags, "the build stage copies from the checkout only"
        for source in sources:
            origin = ROOT / source
            assert origin.exists(), f"COPY {source}: not in the checkout"
            destination = workdir / target
            if origin.is_dir():
                # Docker copies a folder's contents, symlinks kept as links
                destination.mkdir(parents=True, exist_ok=True)
                subprocess.run(["cp", "-a", f"{origin}/.", str(destination)], check=True)
            else:
                destination.mkdir(parents=True, exist_ok=True)
                subprocess.run(["cp", "-a", str(origin), str(destination)], check=True)
    built = [
        run.split("--wheel-dir", 1)[1].split()[1:] for run in BUILD.all("RUN") if "pip wheel" in run
    ]
    (sources,) = built
    from_dockerfile = _build_wheels([context / s for s in sources], tmp_path / "docker-dist")
    from_checkout = _build_wheels([ROOT / s for s in sources], tmp_path / "checkout-dist")
    assert from_dockerfile.keys() == set(IMAGES[dockerfile])
    assert from_dockerfile == from_checkout
    assert any(n.startswith("services/core/schemas/") for n in from_dockerfile["relink-"])
    if "relink_devtools-" in from_dockerfile:
        assert any(
            n.startswith("devtools/provider_sim/") for n in from_dockerfile["relink_devtools-"]
        )
        assert not any(n.startswith("devtools/") for n in from_dockerfile["relink-"])
