"""`ecp policy` commands: start, validate and test bundles, evaluate requests."""

from __future__ import annotations

import importlib
import inspect
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Final

import typer
from pydantic import ValidationError
from temporalio import activity as temporal_activity

from ecp.activities._governed import is_governed
from ecp.authority._canonical import parse_json_strict
from ecp.authority._policy import (
    ENTITIES_FILE,
    POLICIES_FILE,
    SCHEMA_FILE,
    Effect,
    PolicyBundle,
    PolicyRequest,
)
from ecp.authority._policy_init import activity_arguments, render, starter_bundle
from ecp.authority.errors import AuthorityError
from ecp.cli._authority_io import read_bytes, read_json_object
from ecp.cli._common import CliError, one_line_errors

__all__ = ["PolicyTableError", "app"]

app = typer.Typer(
    help="Start, validate and test Cedar policy bundles; evaluate requests against them.",
    no_args_is_help=True,
)

_BUNDLE_HELP = "Bundle directory: policies.cedar, schema.cedarschema(.json), entities.json."
_Bundle = Annotated[Path, typer.Argument(help=_BUNDLE_HELP)]


class PolicyTableError(CliError):
    """A policy test table that cannot be read as a list of cases."""

    code = "policy_table_invalid"


def _request_of(doc: object, where: str) -> PolicyRequest:
    try:
        return PolicyRequest.model_validate(doc)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "(root)"
        raise CliError(f"{where}: request field {loc}: {first['msg']}") from exc


# --- init ---------------------------------------------------------------------

_MISSING: Final = object()


def _load_activity(spec: str) -> tuple[Callable[..., object], bool]:
    """The callable ``MODULE:FUNCTION`` names, and whether it is a method taken from its class.

    Raises:
        CliError: not ``MODULE:NAME``, the module does not import, or it has no such callable.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise CliError(
            f"--activity {spec!r}: expected MODULE:FUNCTION, as in myapp.activities:refund"
        )
    # Like `python -m`: the user's own modules import from where they stand.
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj: object = importlib.import_module(module_name)
    except ImportError as exc:
        raise CliError(f"--activity {spec!r}: cannot import {module_name!r}: {exc}") from exc
    parent: object = None
    for part in attr.split("."):
        parent, obj = obj, getattr(obj, part, _MISSING)
        if obj is _MISSING:
            raise CliError(f"--activity {spec!r}: module {module_name!r} has no {attr!r}")
    if not callable(obj):
        raise CliError(f"--activity {spec!r}: {attr!r} is not a function")
    last = attr.rsplit(".", 1)[-1]
    # A plain function looked up on a class is a method: its first parameter is self.
    skip_self = isinstance(parent, type) and inspect.isfunction(
        inspect.getattr_static(parent, last)
    )
    return obj, skip_self


@app.command("init")
@one_line_errors
def init(
    activity: Annotated[
        str,
        typer.Option(
            "--activity",
            metavar="MODULE:FUNCTION",
            help="The @activity.defn function to govern (MODULE:Class.method for a method); "
            "its module is imported with the current directory on the path.",
        ),
    ],
    directory: Annotated[
        Path, typer.Option("--dir", help="Bundle directory to create; it must not exist.")
    ] = Path("policy"),
    group: Annotated[
        str, typer.Option("--group", help="Group whose members the starting policy permits.")
    ] = "operators",
) -> None:
    """Write a starting bundle for one activity.

    The schema's context.arguments comes from the activity's type hints; the
    policy is one permit for members of --group, one attempt per grant.
    """
    fn, skip_self = _load_activity(activity)
    defn = temporal_activity._Definition.from_callable(fn)
    if defn is None:
        raise CliError(f"--activity {activity!r}: not a Temporal activity (no @activity.defn)")
    if not defn.name:
        raise CliError(f"--activity {activity!r}: a dynamic activity has no activity type")
    args = activity_arguments(fn, defn.name, skip_self=skip_self)
    starter = starter_bundle(args, group)
    # Check the bundle before anything is written: what init writes validates.
    PolicyBundle(
        directory,
        policies_text=starter.policies,
        schema_text=starter.schema,
        schema_format="cedar",
        entities_doc=json.loads(starter.entities),
    ).validate()
    try:
        directory.mkdir(parents=True, exist_ok=False)
    except FileExistsError as exc:
        raise CliError(f"{directory}: already exists; not overwriting it") from exc
    except OSError as exc:
        raise CliError(f"{directory}: cannot create: {exc.strerror}") from exc
    files = (
        (
            SCHEMA_FILE,
            starter.schema,
            f"action {defn.name!r}, context.arguments {render(args.arguments)}",
        ),
        (
            POLICIES_FILE,
            starter.policies,
            f"permit {starter.policy_id!r} for members of Group {group!r}, one attempt per grant",
        ),
        (ENTITIES_FILE, starter.entities, f"Group {group!r}, no members yet"),
    )
    for name, text, what in files:
        (directory / name).write_text(text, encoding="utf-8")
        typer.echo(f"wrote {directory / name}: {what}")
    if not is_governed(fn):
        typer.echo(
            f"note: {args.origin} is not marked @governed; the gate governs it only if "
            f"ECP_GOVERNED_ACTIONS names {defn.name!r}"
        )
    typer.echo(
        f"next: add users to {directory / ENTITIES_FILE} with parents "
        f'[{{"type": "Group", "id": {json.dumps(group, ensure_ascii=False)}}}], '
        f"narrow the permit, then: ecp policy validate {directory}"
    )


@app.command("validate")
@one_line_errors
def validate(bundle: _Bundle) -> None:
    """Parse a bundle and type-check its policies against its schema."""
    b = PolicyBundle.load(bundle)
    b.validate()
    typer.echo(f"ok: {bundle} policies={len(b.policy_ids)} digest={b.digest}")


@app.command("eval")
@one_line_errors
def evaluate(
    bundle: _Bundle,
    request: Annotated[
        Path,
        typer.Option(
            "--request", help="JSON file: {action, initiator, arguments, purpose, environment}."
        ),
    ],
) -> None:
    """Evaluate a request and print the decision as canonical JSON.

    Exit 0 whenever a decision was made, whatever its effect; read ``effect``.
    """
    b = PolicyBundle.load(bundle)
    req = _request_of(read_json_object(request, "request"), str(request))
    typer.echo(b.evaluate(req).to_json().decode())


# --- test ---------------------------------------------------------------------

_CASE_KEYS: Final = ("name", "request", "expect", "reasons_include")
_EFFECTS: Final = tuple(e.value for e in Effect)


@dataclass(frozen=True, slots=True)
class _Case:
    name: str
    request: PolicyRequest
    expect: Effect
    reasons_include: str | None


def _table_doc(path: Path) -> object:
    raw = read_bytes(path, "test table")
    if path.suffix.lower() not in (".yaml", ".yml"):
        try:
            return parse_json_strict(raw)
        except AuthorityError as exc:
            raise PolicyTableError(f"{path}: test table is not valid JSON: {exc}") from exc
    try:
        yaml = importlib.import_module("yaml")
    except ImportError as exc:
        raise PolicyTableError(
            f"{path}: reading a YAML table needs PyYAML; install it or write the table as JSON"
        ) from exc
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise PolicyTableError(
            f"{path}: test table is not valid YAML: {' '.join(str(exc).split())}"
        ) from exc


def _read_table(path: Path) -> list[_Case]:
    """The cases of a test table.

    Raises:
        PolicyTableError: unreadable, not a non-empty list, or a case is malformed
            (the message names the case by number and name).
    """
    doc = _table_doc(path)
    if not isinstance(doc, list):
        raise PolicyTableError(f"{path}: a test table is a list of cases")
    if not doc:
        raise PolicyTableError(f"{path}: the test table has no cases")
    cases: list[_Case] = []
    names: set[str] = set()
    for i, item in enumerate(doc, 1):
        where = f"{path}: case {i}"
        if not isinstance(item, dict):
            raise PolicyTableError(f"{where}: must be an object {{name, request, expect}}")
        name = item.get("name")
        if not isinstance(name, str) or not name.strip():
            raise PolicyTableError(f"{where}: needs a name (a non-empty string)")
        where = f"{path}: case {i} ({name!r})"
        if name in names:
            raise PolicyTableError(f"{where}: another case has the same name")
        names.add(name)
        unknown = sorted(str(k) for k in item if k not in _CASE_KEYS)
        if unknown:
            raise PolicyTableError(
                f"{where}: unknown key(s) {', '.join(unknown)}; a case has {', '.join(_CASE_KEYS)}"
            )
        for key in ("request", "expect"):
            if key not in item:
                raise PolicyTableError(f"{where}: missing {key!r}")
        expect = item["expect"]
        if not isinstance(expect, str) or expect not in _EFFECTS:
            raise PolicyTableError(
                f"{where}: expect must be one of {', '.join(_EFFECTS)}, got {expect!r}"
            )
        if not isinstance(item["request"], dict):
            raise PolicyTableError(f"{where}: request must be an object")
        try:
            request = _request_of(item["request"], where)
        except CliError as exc:
            raise PolicyTableError(str(exc)) from exc
        try:
            request.digest()
        except AuthorityError as exc:
            raise PolicyTableError(f"{where}: request cannot be decided: {exc}") from exc
        include = item.get("reasons_include")
        if include is not None and (not isinstance(include, str) or not include):
            raise PolicyTableError(f"{where}: reasons_include must be a non-empty string")
        cases.append(_Case(name, request, Effect(expect), include))
    return cases


@app.command("test")
@one_line_errors
def test(
    bundle: _Bundle,
    table: Annotated[
        Path,
        typer.Argument(
            help="JSON list of cases {name, request, expect, reasons_include?}; expect is "
            "allow, deny or allow_after_approval (YAML if it ends in .yaml/.yml and "
            "PyYAML is installed)."
        ),
    ],
) -> None:
    """Decide every request of a table and compare with the expected effect.

    Prints one line per case and a summary; exits 1 if any case fails.
    """
    b = PolicyBundle.load(bundle)
    cases = _read_table(table)
    failed = 0
    for case in cases:
        d = b.evaluate(case.request)
        reason_ok = case.reasons_include is None or any(
            case.reasons_include in r for r in d.reasons
        )
        if d.effect is case.expect and reason_ok:
            by = f" ({', '.join(d.policy_ids)})" if d.policy_ids else ""
            typer.echo(f"ok    {case.name}: {d.effect.value}{by}")
            continue
        failed += 1
        want = case.expect.value
        if case.reasons_include is not None:
            want += f" with a reason including {case.reasons_include!r}"
        reasons = "; ".join(d.reasons) or "none"
        typer.echo(f"FAIL  {case.name}: expected {want}, got {d.effect.value}; reasons: {reasons}")
    typer.echo(f"{len(cases) - failed} passed, {failed} failed")
    if failed:
        raise typer.Exit(1)
