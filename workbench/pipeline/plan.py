"""``Pipeline`` + resolver → ``ResolvedStep``s: resolve every reference up front, bind, allowlist."""
from __future__ import annotations

import os
from typing import Any

from .. import credtypes
from ..errors import NotFound, PipelineError, ValidationError
from .maskopts import short_bindings
from .parse import CredentialUse, Pipeline, Step, env_name_problem
from .resolve import Ref, ResolvedCredential, Resolver
from .step import FileSpec, PullAuth, ResolvedStep

SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# the only variables a step receives from the runner's own environment, when set there
PASSED_THROUGH = ("LANG", "LC_ALL", "TZ", "TERM")


def plan(pipeline: Pipeline, resolver: Resolver, *, context: dict | None = None,
         workdir: str | None = None, environ: dict[str, str] | None = None
         ) -> list[ResolvedStep]:
    """Resolve all references, check each binding fits its credential type, build each step."""
    context = dict(context or {}, pipeline=pipeline.name)
    for step in pipeline.steps:
        if step.id_token:
            raise _no_identity(pipeline, step)
    creds = _resolve(pipeline, resolver, context)
    unmasked = {v for step in pipeline.steps for use in step.credentials if not use.mask
                for v in _secret_values(creds[use.ref])
                if len(v.rstrip(b"\r\n")) < pipeline.masking.min_length}
    secrets = tuple(v for v in _run_secrets(creds.values()) if v not in unmasked)
    environ = os.environ if environ is None else environ
    return [_step(pipeline, step, creds, secrets, workdir, environ, context)
            for step in pipeline.steps]


def plan_step(pipeline: Pipeline, step: Step, resolver: Resolver, *, context: dict,
              workdir: str | None = None, environ: dict[str, str] | None = None,
              seen: tuple[bytes, ...] = ()) -> ResolvedStep:
    """One step, resolving only its own references (a run token releases one step at a
    time); ``seen``: the secrets of the steps before it, masked in this step's output too."""
    context = dict(context, pipeline=pipeline.name, step=step.name)
    single = Pipeline(pipeline.name, (step,), pipeline.file)
    if step.id_token and not getattr(resolver, "per_step", False):
        raise _no_identity(pipeline, step)
    creds = _resolve(single, resolver, context) if references(single) or not step.id_token \
        else resolver.resolve([], context=context)
    secrets = tuple(dict.fromkeys(seen + _run_secrets(creds.values())))
    identity = None
    if step.id_token:
        token = getattr(resolver, "id_token", None)
        if not token:
            raise PipelineError(f"step {step.name}: the server issued no identity token",
                                file=pipeline.file, line=step.line,
                                field=f"steps.{step.name}.id_token")
        identity = (step.id_token[1], token)
        secrets += (token.encode(),)  # a bearer credential: masked like one
    environ = os.environ if environ is None else environ
    return _step(pipeline, step, creds, secrets, workdir, environ, context, identity)


def _no_identity(pipeline: Pipeline, step: Step) -> PipelineError:
    return PipelineError(f"step {step.name}: id_token is issued only in runs opened on a "
                         "server (workbench run --server)", file=pipeline.file,
                         line=step.line, field=f"steps.{step.name}.id_token")


def references(pipeline: Pipeline) -> list[tuple[Ref, Step, int | None]]:
    """Every reference in the pipeline with the step and line that made it."""
    out = []
    for step in pipeline.steps:
        if step.image_pull_credential is not None:
            out.append((step.image_pull_credential, step, step.line))
        out.extend((use.ref, step, use.line) for use in step.credentials)
    return out


def _resolve(pipeline: Pipeline, resolver: Resolver, context: dict
             ) -> dict[Ref, ResolvedCredential]:
    refs = references(pipeline)
    wanted = list(dict.fromkeys(ref for ref, _, _ in refs))
    if not wanted:
        return {}
    try:
        creds = resolver.resolve(wanted, context=context)
    except NotFound as exc:
        missing = {str(m) for m in exc.details.get("missing", [])}
        for ref, step, line in refs:
            if str(ref) in missing or not missing:
                raise PipelineError(_missing(ref, step), file=pipeline.file, line=line,
                                    field=f"steps.{step.name}.credentials",
                                    missing=sorted(missing)) from None
        raise
    for ref, step, line in refs:  # a resolver that silently drops a ref is a resolver bug
        if ref not in creds:
            raise PipelineError(_missing(ref, step), file=pipeline.file, line=line,
                                field=f"steps.{step.name}.credentials", missing=[str(ref)])
    return creds


def _missing(ref: Ref, step: Step) -> str:
    if ref.version is None:
        return f"step {step.name}: unknown credential {ref.id!r}"
    return (f"step {step.name}: credential {ref.id!r} has no version {ref.version} "
            "(or does not exist)")


def _run_secrets(creds) -> tuple[bytes, ...]:
    """Every maskable value of every credential in the run: a step may print another's."""
    out: dict[bytes, None] = {}
    for cred in creds:
        for value in credtypes.get(cred.type).mask_values(cred.values):
            if value:
                out[value] = None
    return tuple(out)


def _secret_values(cred) -> set[bytes]:
    return {v for v in credtypes.get(cred.type).mask_values(cred.values) if v}


def _step(pipeline: Pipeline, step: Step, creds: dict[Ref, ResolvedCredential],
          secrets: tuple[bytes, ...], workdir: str | None, environ, context: dict,
          identity: tuple[str, str] | None = None) -> ResolvedStep:
    env = _basics(pipeline, step, workdir, environ, context)
    env.update(step.environment)
    if identity:  # (variable, signed token): checked against the other bindings by parse
        env[identity[0]] = identity[1]
    bound = {name: "environment" for name in step.environment}
    files: list[FileSpec] = []
    uses: list[tuple[str, int]] = []
    for use in step.credentials:
        cred = creds[use.ref]
        before, nfiles = dict(env), len(files)
        try:
            _bind(use, cred, env, files, bound)
        except ValidationError as exc:
            if isinstance(exc, PipelineError):
                raise
            raise PipelineError(f"step {step.name}: credential {use.ref} ({cred.type}): "
                                f"{exc.message}", file=pipeline.file, line=use.line,
                                field=f"steps.{step.name}.credentials.{use.ref}") from None
        short = short_bindings({k: v for k, v in env.items() if before.get(k) != v},
                               files[nfiles:], _secret_values(cred), pipeline.masking.min_length)
        if short and use.mask:
            raise PipelineError(
                f"step {step.name}: credential {use.ref} binds a value shorter than "
                f"{pipeline.masking.min_length} bytes to {', '.join(short)}: too short to mask "
                "in the log; use a longer value, or add 'mask: false' to this binding to use it "
                "unmasked", file=pipeline.file, line=use.line,
                field=f"steps.{step.name}.credentials.{use.ref}")
        uses.append((cred.id, cred.version))
    pull = None
    if step.image_pull_credential is not None:
        pull = _pull_auth(pipeline, step, creds[step.image_pull_credential])
        uses.append((creds[step.image_pull_credential].id,
                     creds[step.image_pull_credential].version))
    return ResolvedStep(
        name=step.name, run=step.run, env=env, files=tuple(files), image=step.image,
        pull_auth=pull, timeout=step.timeout, workdir=workdir,
        executor="docker" if step.image else "local", secrets=secrets,
        uses=tuple(dict.fromkeys(uses)))


def _basics(pipeline: Pipeline, step: Step, workdir, environ, context: dict) -> dict[str, str]:
    """The allowlisted environment every step starts from; never a copy of os.environ."""
    env = {k: environ[k] for k in PASSED_THROUGH if environ.get(k)}
    if not step.image:  # a container keeps its image's own PATH and HOME
        env["PATH"] = SAFE_PATH
        if workdir:
            env["HOME"] = workdir
    env.update(CI="true", WORKBENCH_PIPELINE=pipeline.name, WORKBENCH_STEP=step.name)
    if context.get("run"):
        env["WORKBENCH_RUN"] = str(context["run"])
    return env


def _bind(use: CredentialUse, cred: ResolvedCredential, env: dict[str, str],
          files: list[FileSpec], bound: dict[str, str]) -> None:
    ctype = credtypes.get(cred.type)
    binding: dict[str, Any]
    if use.env is None and use.file is None:
        binding = ctype.default_binding(cred.id)
    else:
        binding = {k: v for k, v in (("env", use.env), ("file", use.file)) if v is not None}
    target = binding.get("env")
    if target == "*":  # every key under its own name (generic)
        for key in ctype.bindable_fields(cred.values):
            _set(env, bound, key, ctype.field_value(cred.values, key), f"env.{key}")
    elif isinstance(target, str):
        _set(env, bound, target, ctype.single_value(cred.values), "env")
    elif isinstance(target, dict):
        for fname, var in target.items():
            _set(env, bound, var, ctype.field_value(cred.values, fname), f"env.{fname}")
    if binding.get("file"):
        var = binding["file"]
        form = ctype.file_form(cred.values)
        filename = credtypes.check_filename(use.filename or form.filename)
        _claim(bound, var, "file")
        files.append(FileSpec(env=var, filename=filename, content=form.content,
                              expose_dir=form.expose_dir))


def _set(env: dict[str, str], bound: dict[str, str], name: str, value: str, where: str) -> None:
    _claim(bound, name, where)
    if "\x00" in value:
        raise ValidationError(f"the value for {name} contains a NUL character and cannot be "
                              "passed in the environment; bind it as a file", field=where)
    env[name] = value


def _claim(bound: dict[str, str], name: str, where: str) -> None:
    problem = env_name_problem(name)
    if problem:
        raise ValidationError(problem, field=where)
    if name in bound:
        raise ValidationError(f"{name} is bound twice in this step", field=where)
    bound[name] = where


def _pull_auth(pipeline: Pipeline, step: Step, cred: ResolvedCredential) -> PullAuth:
    where = dict(file=pipeline.file, line=step.line,
                 field=f"steps.{step.name}.image_pull_credential")
    if cred.type != "docker_registry":
        raise PipelineError(f"step {step.name}: image_pull_credential {cred.id!r} is a "
                            f"{cred.type} credential; it must be docker_registry", **where)
    registry = cred.values["registry"]
    first = step.image.split("/", 1)[0] if "/" in step.image else ""
    explicit = "." in first or ":" in first or first == "localhost"
    if explicit and first.lower() != registry.lower():
        # the engine sends pull credentials to the image's registry: never to another one
        raise PipelineError(f"step {step.name}: image {step.image!r} is not on registry "
                            f"{registry!r} of credential {cred.id!r}", **where)
    return PullAuth(registry=registry, username=cred.values["username"],
                    password=cred.values["password"])
