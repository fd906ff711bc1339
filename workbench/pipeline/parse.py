"""Pipeline YAML → ``Pipeline`` under ``safeyaml``'s limits; errors name file, line, field."""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .. import credtypes, safeyaml
from ..errors import PipelineError
from .maskopts import MaskingOptions, parse_mask_flag, parse_masking
from .names import (FORBIDDEN, FORBIDDEN_PREFIXES, IMAGE, NAME,  # noqa: F401 - re-exported
                    env_name_problem, parse_ref, parse_timeout)
from .resolve import Ref

MAX_BYTES = safeyaml.MAX_BYTES
MAX_DEPTH = 16
MAX_STEPS = 200
MAX_CREDENTIALS = 50
PIPELINE_KEYS = ("name", "steps", "masking")
STEP_KEYS = ("name", "run", "image", "image_pull_credential", "timeout", "environment",
             "credentials", "id_token")
ID_TOKEN_ENV = "WORKBENCH_ID_TOKEN"
USE_KEYS = ("id", "env", "file", "filename", "mask")


@dataclass(frozen=True)
class CredentialUse:
    """One entry of a step's ``credentials``; no ``env``/``file`` means the type's default."""

    ref: Ref
    env: str | dict[str, str] | None = None
    file: str | None = None
    filename: str | None = None
    line: int | None = None
    mask: bool = True  # False: the step may bind values too short to mask (left unmasked)


@dataclass(frozen=True)
class Step:
    name: str
    run: str
    image: str | None = None
    image_pull_credential: Ref | None = None
    timeout: float | None = None
    environment: dict[str, str] = field(default_factory=dict)
    credentials: tuple[CredentialUse, ...] = ()
    line: int | None = None
    id_token: tuple[str, str] | None = None  # (audience, variable): a signed OIDC token


@dataclass(frozen=True)
class Pipeline:
    name: str
    steps: tuple[Step, ...]
    file: str = "<pipeline>"
    masking: MaskingOptions = field(default_factory=MaskingOptions)


def load_pipeline(path: str | Path) -> Pipeline:
    """Read and parse a pipeline file, refusing oversized files before reading them whole."""
    p = Path(path)
    with open(p, "rb") as fh:
        data = fh.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise PipelineError(f"pipeline is larger than {MAX_BYTES // 1024} KiB", file=str(path))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise PipelineError("pipeline is not UTF-8 text", file=str(path)) from None
    return parse_pipeline(text, filename=str(path))


def parse_pipeline(text: str, *, filename: str) -> Pipeline:
    """Parse pipeline YAML; every refusal is a PipelineError naming file, line and field."""
    if len(text.encode("utf-8", "replace")) > MAX_BYTES:
        raise PipelineError(f"pipeline is larger than {MAX_BYTES // 1024} KiB", file=filename)
    root = _compose(text, filename)
    return _Parser(filename).pipeline(root)


def _compose(text: str, filename: str) -> yaml.Node:
    node = safeyaml.compose(text, lambda message, line: PipelineError(
        message, file=filename, line=line), max_depth=MAX_DEPTH)
    if node is None:
        raise PipelineError("pipeline is empty", file=filename, line=1)
    return node


class _Parser:
    """Walks the composed node tree, so every value keeps the line it came from."""

    def __init__(self, filename: str):
        self.file = filename
        self.constructor = yaml.SafeLoader("")

    def fail(self, message: str, node: yaml.Node | None, field: str | None = None):
        line = node.start_mark.line + 1 if node is not None else None
        raise PipelineError(message, file=self.file, line=line, field=field)

    def scalar(self, node: yaml.Node, field: str):
        if not isinstance(node, yaml.ScalarNode):
            self.fail(f"{field} must be a single value", node, field)
        try:
            return self.constructor.construct_object(node)
        except yaml.YAMLError:
            self.fail(f"{field or 'value'}: unsupported YAML tag {node.tag[:64]!r}", node, field)
        except (ValueError, OverflowError):  # an integer of more than 4,300 digits
            self.fail(f"{field or 'value'} cannot be read (a number too large?)", node, field)

    def text(self, node: yaml.Node, field: str) -> str:
        value = self.scalar(node, field)
        if isinstance(value, bool) or value is None or not isinstance(value, (str, int, float)):
            self.fail(f"{field} must be text", node, field)
        return str(value)

    def mapping(self, node: yaml.Node, field: str, allowed: tuple[str, ...]
                ) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            self.fail(f"{field} must be a mapping", node, field)
        out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for knode, vnode in node.value:
            key = self.scalar(knode, field)
            where = f"{field}.{key}" if field else str(key)
            if not isinstance(key, str):
                self.fail(f"keys of {field or 'the pipeline'} must be text", knode, field)
            if key in out:
                self.fail(f"{key!r} appears twice", knode, where)
            if allowed and key not in allowed:
                hint = difflib.get_close_matches(key, allowed, n=1)
                tip = f"; did you mean {hint[0]!r}?" if hint else f"; expected one of {list(allowed)}"
                self.fail(f"unknown key {key[:64]!r}{tip}", knode, where)
            out[key] = (knode, vnode)
        return out

    def pipeline(self, root: yaml.Node) -> Pipeline:
        top = self.mapping(root, "", PIPELINE_KEYS)
        name = Path(self.file).stem
        if "name" in top:
            name = self.text(top["name"][1], "name")
        if not NAME.match(name):
            self.fail(f"pipeline name {name[:64]!r} must be 1-63 letters, digits, '.', '_' "
                      "or '-'", top["name"][1] if "name" in top else root, "name")
        if "steps" not in top:
            self.fail("a pipeline needs a list of steps", root, "steps")
        snode = top["steps"][1]
        if not isinstance(snode, yaml.SequenceNode) or not snode.value:
            self.fail("steps must be a non-empty list", snode, "steps")
        if len(snode.value) > MAX_STEPS:
            self.fail(f"more than {MAX_STEPS} steps", snode, "steps")
        steps, seen = [], {}
        for i, node in enumerate(snode.value):
            step = self.step(node, f"steps[{i}]")
            if step.name in seen:
                self.fail(f"step name {step.name!r} is already used on line {seen[step.name]}",
                          node, f"steps[{i}].name")
            seen[step.name] = step.line
            steps.append(step)
        masking = parse_masking(self, top["masking"][1]) if "masking" in top else MaskingOptions()
        return Pipeline(name=name, steps=tuple(steps), file=self.file, masking=masking)

    def step(self, node: yaml.Node, where: str) -> Step:
        keys = self.mapping(node, where, STEP_KEYS)
        line = node.start_mark.line + 1
        for required in ("name", "run"):
            if required not in keys:
                self.fail(f"a step needs {required!r}", node, f"{where}.{required}")
        name = self.text(keys["name"][1], f"{where}.name")
        if not NAME.match(name):
            self.fail(f"step name {name[:64]!r} must be 1-63 letters, digits, '.', '_' or '-'",
                      keys["name"][1], f"{where}.name")
        where = f"steps.{name}"
        run = self.text(keys["run"][1], f"{where}.run")
        if not run.strip():
            self.fail("run must not be empty", keys["run"][1], f"{where}.run")
        image = pull = timeout = None
        if "image" in keys:
            image = self.text(keys["image"][1], f"{where}.image")
            if not IMAGE.match(image):
                self.fail(f"image {image[:64]!r} is not an image reference", keys["image"][1],
                          f"{where}.image")
        if "image_pull_credential" in keys:
            vnode = keys["image_pull_credential"][1]
            if image is None:
                self.fail("image_pull_credential needs an image", vnode,
                          f"{where}.image_pull_credential")
            pull = self.ref(vnode, f"{where}.image_pull_credential")
        if "timeout" in keys:
            vnode = keys["timeout"][1]
            timeout = parse_timeout(self.scalar(vnode, f"{where}.timeout"))
            if timeout is None:
                self.fail("timeout must be a positive duration like 30s, 10m, 1h or a number "
                          "of seconds, at most 24h", vnode, f"{where}.timeout")
        bound: dict[str, int] = {}
        environment = {}
        if "environment" in keys:
            vnode = keys["environment"][1]
            for key, (knode, v) in self.mapping(vnode, f"{where}.environment", ()).items():
                self.bind(key, knode, f"{where}.environment.{key}", bound)
                environment[key] = self.text(v, f"{where}.environment.{key}")
        uses: list[CredentialUse] = []
        if "credentials" in keys:
            vnode = keys["credentials"][1]
            if not isinstance(vnode, yaml.SequenceNode):
                self.fail("credentials must be a list", vnode, f"{where}.credentials")
            if len(vnode.value) > MAX_CREDENTIALS:
                self.fail(f"more than {MAX_CREDENTIALS} credentials", vnode,
                          f"{where}.credentials")
            for i, item in enumerate(vnode.value):
                uses.append(self.use(item, f"{where}.credentials[{i}]", bound))
        id_token = self.id_token(keys["id_token"][1], f"{where}.id_token", bound) \
            if "id_token" in keys else None
        return Step(name=name, run=run, image=image, image_pull_credential=pull, timeout=timeout,
                    environment=environment, credentials=tuple(uses), line=line,
                    id_token=id_token)

    def id_token(self, node: yaml.Node, where: str, bound: dict[str, int]) -> tuple[str, str]:
        """``{aud: AUDIENCE, env: NAME}``: the step receives a signed identity token."""
        keys = self.mapping(node, where, ("aud", "env"))
        if "aud" not in keys:
            self.fail("id_token needs an 'aud' (the audience that will verify it)", node,
                      f"{where}.aud")
        aud = self.text(keys["aud"][1], f"{where}.aud")
        if not 0 < len(aud) <= 200:
            self.fail("aud is 1-200 characters", keys["aud"][1], f"{where}.aud")
        env = ID_TOKEN_ENV
        if "env" in keys:
            env = self.text(keys["env"][1], f"{where}.env")
            self.bind(env, keys["env"][1], f"{where}.env", bound)
        return aud, env

    def ref(self, node: yaml.Node, where: str) -> Ref:
        text = self.text(node, where)
        ref = parse_ref(text)
        if ref is None:
            self.fail(f"{text[:80]!r} is not a credential ID (lowercase letters, digits, '.', "
                      "'_', '-'; optionally @VERSION)", node, where)
        return ref

    def bind(self, name: str, node: yaml.Node, where: str, bound: dict[str, int]) -> None:
        problem = env_name_problem(name)
        if problem:
            self.fail(problem, node, where)
        line = node.start_mark.line + 1
        if name in bound:
            self.fail(f"{name} is bound twice in this step (also on line {bound[name]})",
                      node, where)
        bound[name] = line

    def use(self, node: yaml.Node, where: str, bound: dict[str, int]) -> CredentialUse:
        line = node.start_mark.line + 1
        if isinstance(node, yaml.ScalarNode):  # shorthand: just the ID, default binding
            return CredentialUse(ref=self.ref(node, where), line=line)
        keys = self.mapping(node, where, USE_KEYS)
        if "id" not in keys:
            self.fail("a credential entry needs an 'id'", node, f"{where}.id")
        ref = self.ref(keys["id"][1], f"{where}.id")
        where = f"{where.rsplit('[', 1)[0]}.{ref}"
        env: str | dict[str, str] | None = None
        if "env" in keys:
            knode, vnode = keys["env"]
            if isinstance(vnode, yaml.MappingNode):
                env = {}
                for fname, (fk, fv) in self.mapping(vnode, f"{where}.env", ()).items():
                    var = self.text(fv, f"{where}.env.{fname}")
                    self.bind(var, fv, f"{where}.env.{fname}", bound)
                    env[fname] = var
                if not env:
                    self.fail("env must name at least one field", vnode, f"{where}.env")
            else:
                env = self.text(vnode, f"{where}.env")
                self.bind(env, vnode, f"{where}.env", bound)
        file = filename = None
        if "file" in keys:
            vnode = keys["file"][1]
            file = self.text(vnode, f"{where}.file")
            if "/" in file or "\\" in file:
                self.fail("file names the variable that receives the file's path; it must not "
                          "be a path (use 'filename' to choose the file's name)", vnode,
                          f"{where}.file")
            self.bind(file, vnode, f"{where}.file", bound)
        if "filename" in keys:
            vnode = keys["filename"][1]
            if file is None:
                self.fail("filename needs file", vnode, f"{where}.filename")
            filename = self.text(vnode, f"{where}.filename")
            try:
                credtypes.check_filename(filename)
            except Exception as exc:  # ValidationError: re-raised with file/line
                self.fail(getattr(exc, "message", str(exc)), vnode, f"{where}.filename")
        return CredentialUse(ref=ref, env=env, file=file, filename=filename, line=line,
                             mask=parse_mask_flag(self, keys, where))
