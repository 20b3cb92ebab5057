"""``deploy/Dockerfile`` run without a container engine: its own instructions, read from
the file, executed in a directory that stands for the image's root filesystem.

What a container runtime would do, step by step: ``WORKDIR``, ``ENV`` (``$VAR``
expanded), ``COPY`` from the build context (and ``COPY --from`` between stages, which
share this one root), ``RUN`` through ``/bin/sh -c`` with the stage's environment,
``useradd``/``groupadd`` as the home directory they create, then ``USER``, ``WORKDIR``,
``ENTRYPOINT`` and ``CMD`` for the process the image runs. Absolute paths the Dockerfile
owns (those of its ``WORKDIR`` and ``COPY`` lines) are rewritten under the root; the
base image's Python is a Python 3.11 of this machine that any user may run. An
instruction this runner does not know fails the build, so the file and the runner
cannot drift apart.

Like Docker's build cache, a ``RUN`` layer is reused when every instruction up to it
and every file copied before it are the same (the dependency layer, which only
``pyproject.toml`` changes, is the slow one). The root's path is fixed, because a
virtualenv remembers where it was made.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

KNOWN = {"FROM", "WORKDIR", "RUN", "ENV", "COPY", "USER", "EXPOSE", "HEALTHCHECK"}
KNOWN |= {"ENTRYPOINT", "CMD"}
SYSTEM_PATH = "/usr/bin:/bin"
KEPT_LAYERS = 3
BUILD_TIMEOUT_SECONDS = 1800  # a cold dependency layer downloads every wheel


@dataclass(frozen=True, slots=True)
class Instruction:
    keyword: str
    args: str
    stage: str


def parse(dockerfile: Path) -> list[Instruction]:
    """The instructions, continuation lines joined, comments dropped, each with the name
    of its stage."""
    logical: list[str] = []
    pending = ""
    for line in dockerfile.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    out: list[Instruction] = []
    stage = ""
    for text in logical:
        keyword, _, args = text.partition(" ")
        keyword = keyword.upper()
        if keyword not in KNOWN:
            raise ValueError(f"the image runner does not know {keyword}: teach it first")
        if keyword == "FROM":
            parts = args.split()
            stage = parts[-1] if len(parts) >= 3 and parts[-2].upper() == "AS" else args
        out.append(Instruction(keyword, args.strip(), stage))
    return out


@dataclass
class Image:
    """What the build leaves: the root, and how the image's process starts."""

    root: Path
    env: dict[str, str]
    uid: int
    gid: int
    workdir: Path
    entrypoint: list[str]
    cmd: list[str]
    exposed: list[int] = field(default_factory=list)

    def path(self, inside: str) -> Path:
        """A path of the image, on this machine."""
        return self.root / inside.lstrip("/")


def base_python() -> str:
    """A Python 3.11 that a user without privileges can run (every directory on its way
    searchable by others): the base image's interpreter."""
    candidates = [sys.executable, "/usr/local/bin/python3.11", "/usr/bin/python3.11"]
    for candidate in candidates:
        if not Path(candidate).exists():
            continue
        real = Path(os.path.realpath(candidate))
        if all(p.stat().st_mode & stat.S_IXOTH for p in [real, *real.parents]):
            found = subprocess.run(
                [str(real), "-c", "import sys, venv, ensurepip; print(sys.version_info[:2])"],
                capture_output=True,
                text=True,
            )
            if found.returncode == 0 and found.stdout.strip() == "(3, 11)":
                return str(real)
    raise RuntimeError("no Python 3.11 with venv that any user may run")


class Builder:
    """Runs a Dockerfile's instructions under one root (module docstring)."""

    def __init__(self, dockerfile: Path, context: Path, base: Path) -> None:
        self.instructions = parse(dockerfile)
        self.context = context
        self.base = base
        self.root = base / "root"
        self.layers = base / "layers"
        self.python = base_python()
        owned = set()
        for item in self.instructions:
            if item.keyword in ("WORKDIR", "COPY"):
                owned |= {t.split("/")[1] for t in item.args.split() if t.startswith("/")}
        self._owned = re.compile(r"(?<![\w/.-])/(" + "|".join(sorted(owned)) + r")(?=/|\b)")

    def mapped(self, text: str) -> str:
        """A command or value with the image's own absolute paths moved under the root."""
        return self._owned.sub(lambda m: f"{self.root}/{m.group(1)}", text)

    def build(self, log: Path) -> Image:
        """Every instruction, in order; the image of the last stage."""
        shutil.rmtree(self.root, ignore_errors=True)
        self.root.mkdir(parents=True)
        for directory in (self.base, self.root):
            directory.chmod(0o755)
        shim = self.root / "_base" / "bin"
        shim.mkdir(parents=True)
        for name in ("python", "python3", "python3.11"):
            (shim / name).symlink_to(self.python)
        image = Image(self.root, {}, 0, 0, self.root, [], [])
        key = hashlib.sha256(self.python.encode())
        for item in self.instructions:
            key.update(f"{item.stage}|{item.keyword}|{item.args}".encode())
            self._step(item, image, key, shim, log)
        return image

    def _step(self, item: Instruction, image: Image, key: object, shim: Path, log: Path) -> None:
        args = item.args
        if item.keyword == "FROM":
            image.env = {"PATH": f"{shim}:{SYSTEM_PATH}", "HOME": str(self.base / "home")}
            image.workdir, image.uid, image.gid = self.root, 0, 0
        elif item.keyword == "WORKDIR":
            image.workdir = Path(self.mapped(args))
            image.workdir.mkdir(parents=True, exist_ok=True)
        elif item.keyword == "ENV":
            for name, value in _pairs(args):
                image.env[name] = self.mapped(_expand(value, image.env))
        elif item.keyword == "COPY":
            self._copy(args, image, key)
        elif item.keyword == "RUN":
            self._run(args, image, key, log)
        elif item.keyword == "USER":
            uid, _, gid = args.partition(":")
            image.uid, image.gid = int(uid), int(gid or uid)
        elif item.keyword == "EXPOSE":
            image.exposed = [int(p.split("/")[0]) for p in args.split()]
        elif item.keyword == "ENTRYPOINT":
            image.entrypoint = _exec_form(args)
        elif item.keyword == "CMD":
            image.cmd = _exec_form(args)

    def _copy(self, args: str, image: Image, key: object) -> None:
        parts = args.split()
        if parts[0].startswith("--from="):
            source, target = Path(self.mapped(parts[1])), Path(self.mapped(parts[2]))
            if source != target:  # stages share the root: the same path is already there
                shutil.copytree(source, target, symlinks=True, dirs_exist_ok=True)
            return
        *sources, destination = parts
        target = Path(self.mapped(destination))
        if not target.is_absolute():
            target = image.workdir / destination
        for name in sources:
            source = self.context / name
            _hash_into(key, source)
            if source.is_dir():
                shutil.copytree(source, target, dirs_exist_ok=True, ignore=_ignored)
            else:
                place = (
                    target / source.name
                    if len(sources) > 1 or destination.endswith("/")
                    else target
                )
                place.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, place)

    def _run(self, args: str, image: Image, key: object, log: Path) -> None:
        command = self.mapped(args)
        if re.match(r"\s*groupadd\b", command):
            self._add_user(command)
            return
        layer = self.layers / key.hexdigest()  # type: ignore[attr-defined]
        if layer.is_dir():
            shutil.rmtree(self.root)
            subprocess.run(["cp", "-a", str(layer), str(self.root)], check=True)
            os.utime(layer)  # the least recently used layer goes first
            return
        started = time.monotonic()
        with log.open("ab") as handle:
            handle.write(f"\n$ RUN {args}\n".encode())
            handle.flush()
            subprocess.run(
                ["/bin/sh", "-c", command],
                cwd=image.workdir,
                env=image.env,
                stdout=handle,
                stderr=subprocess.STDOUT,
                check=True,
                timeout=BUILD_TIMEOUT_SECONDS,
            )
        if time.monotonic() - started > 20:  # worth keeping, as Docker's cache would
            self._keep(layer)

    def _keep(self, layer: Path) -> None:
        self.layers.mkdir(parents=True, exist_ok=True)
        kept = sorted(self.layers.iterdir(), key=lambda p: p.stat().st_mtime)
        for old in kept[: max(0, len(kept) - KEPT_LAYERS + 1)]:
            shutil.rmtree(old, ignore_errors=True)
        partial = layer.with_suffix(".partial")
        shutil.rmtree(partial, ignore_errors=True)
        subprocess.run(["cp", "-a", str(self.root), str(partial)], check=True)
        partial.rename(layer)

    def _add_user(self, command: str) -> None:
        """``groupadd … && useradd …``: no account is made on this machine; the home
        directory ``--create-home`` asks for is, owned by the new uid."""
        words = shlex.split(command.replace("&&", " "))
        uid = int(words[words.index("--uid") + 1])
        gid = (
            int(words[words.index("--gid") + 1])
            if words[words.index("--gid") + 1].isdigit()
            else uid
        )
        if "--create-home" in words:
            home = Path(words[words.index("--home-dir") + 1])
            home.mkdir(parents=True, exist_ok=True)
            os.chown(home, uid, gid)


def _ignored(directory: str, names: list[str]) -> set[str]:
    return {n for n in names if n in ("__pycache__", ".mypy_cache", ".pytest_cache")}


def _hash_into(key: object, source: Path) -> None:
    files = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
    for path in files:
        if "__pycache__" not in path.parts:
            key.update(str(path.relative_to(source.parent)).encode())  # type: ignore[attr-defined]
            key.update(path.read_bytes())  # type: ignore[attr-defined]


def _pairs(args: str) -> list[tuple[str, str]]:
    words = shlex.split(args)
    if "=" not in words[0]:  # ENV NAME value
        return [(words[0], " ".join(words[1:]))]
    return [(w.split("=", 1)[0], w.split("=", 1)[1]) for w in words]


def _expand(value: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), ""), value)


def _exec_form(args: str) -> list[str]:
    import json

    found = json.loads(args)
    assert isinstance(found, list), "the exec form ([...]) is the one a runtime runs as is"
    return [str(word) for word in found]


def image_base() -> Path:
    """Where the image's root and its cached layers live (fixed: module docstring)."""
    return Path(tempfile.gettempdir()) / "portrait-image"
