"""Starting policy bundles for one's own activities (``ecp policy init``).

The schema's ``context.arguments`` is generated from the activity's type
hints, in the shape :func:`ecp.activities._authority_side.policy_arguments`
shows the call to the policy:

* one parameter typed as a dataclass, a pydantic model or a ``TypedDict``:
  that object's fields;
* otherwise (several parameters, or one that is not an object): one record
  keyed by parameter name;
* no parameters: ``{args: Set<String>}`` (the call shows ``{"args": []}``).

Types map as ``str`` → ``String``, ``int`` → ``Long``, ``bool`` → ``Bool``,
``list[T]`` (also ``set``, ``frozenset``, ``tuple[T, ...]``, ``Sequence``) →
``Set<T>``, a nested dataclass, model or ``TypedDict`` → a record, ``Literal``
and ``Enum`` by their values. A field that has a default or may be ``None``
is an optional attribute (``name?: Type``): the authority leaves ``null``
attributes out, as Cedar has no null. Everything else is refused in one line
naming the field: Cedar has no floating-point numbers, no maps and no unions.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import enum
import inspect
import json
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal, NotRequired, Required, Union

from pydantic import BaseModel

from ecp.authority._policy import PRINCIPAL_TYPE, RESOURCE_TYPE, ROLE_TYPE
from ecp.authority.errors import PolicyBundleError

__all__ = [
    "ActivityArguments",
    "ActivitySchemaError",
    "CedarAttr",
    "CedarRecord",
    "CedarSet",
    "CedarType",
    "StarterBundle",
    "activity_arguments",
    "cedar_string",
    "render",
    "starter_bundle",
]

#: Words Cedar reserves: quoted where they name an attribute.
_RESERVED: Final = frozenset(
    {"true", "false", "if", "then", "else", "in", "is", "like", "has", "__cedar"}
)
_IDENT: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HINT: Final = "use str, int, bool, list[...] or a dataclass, pydantic model or TypedDict"
_SETS: Final = frozenset(
    {
        list,
        set,
        frozenset,
        collections.abc.Sequence,
        collections.abc.MutableSequence,
        collections.abc.Set,
        collections.abc.MutableSet,
        collections.abc.Collection,
        collections.abc.Iterable,
    }
)
_MAPS: Final = frozenset(
    {dict, collections.abc.Mapping, collections.abc.MutableMapping, collections.OrderedDict}
)


class ActivitySchemaError(PolicyBundleError):
    """An activity's arguments have no Cedar schema (a float, a map, an untyped parameter, ...)."""

    code = "policy_schema_unsupported"


# --- the Cedar types ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CedarSet:
    """``Set<element>``."""

    element: CedarType


@dataclass(frozen=True, slots=True)
class CedarAttr:
    """One attribute of a record; ``optional`` renders as ``name?: Type``."""

    name: str
    type: CedarType
    optional: bool = False


@dataclass(frozen=True, slots=True)
class CedarRecord:
    """A record type, attributes in declaration order."""

    attrs: tuple[CedarAttr, ...]


#: ``"String"``, ``"Long"`` or ``"Bool"``, a set or a record.
CedarType = str | CedarSet | CedarRecord


def cedar_string(text: str) -> str:
    """``text`` as a Cedar string literal (schema or policy).

    Raises:
        ActivitySchemaError: ``text`` is empty or holds control characters.
    """
    if not text or any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise ActivitySchemaError(f"{text!r}: a Cedar name must be non-empty, printable text")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _name(text: str) -> str:
    """An attribute or action name: bare when Cedar allows it, quoted otherwise."""
    if _IDENT.fullmatch(text) and text not in _RESERVED:
        return text
    return cedar_string(text)


def _access(attr: str) -> str:
    """Cedar for reading ``attr`` of ``context.arguments`` in a policy."""
    if _IDENT.fullmatch(attr) and attr not in _RESERVED:
        return f"context.arguments.{attr}"
    return f"context.arguments[{cedar_string(attr)}]"


def render(t: CedarType, indent: int | None = None) -> str:
    """Cedar schema text of ``t``: one line when ``indent`` is None, else indented records."""
    if isinstance(t, str):
        return t
    if isinstance(t, CedarSet):
        return f"Set<{render(t.element, indent)}>"
    if not t.attrs:
        return "{}"
    parts = [
        f"{_name(a.name)}{'?' if a.optional else ''}: "
        f"{render(a.type, None if indent is None else indent + 1)}"
        for a in t.attrs
    ]
    if indent is None:
        return "{ " + ", ".join(parts) + " }"
    pad = "  " * (indent + 1)
    return "{\n" + "".join(f"{pad}{p},\n" for p in parts) + "  " * indent + "}"


# --- type hints -> Cedar ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Where:
    """Names a place in the arguments: ``parameter 'p' field 'a.b'`` or ``field 'a.b'``."""

    param: str = ""
    path: str = ""

    def child(self, name: str) -> _Where:
        return _Where(self.param, f"{self.path}.{name}" if self.path else name)

    def __str__(self) -> str:
        parts = [f"parameter {self.param!r}"] if self.param else []
        if self.path:
            parts.append(f"field {self.path!r}")
        return " ".join(parts) or "arguments"


def _refuse(where: _Where | str, why: str) -> ActivitySchemaError:
    return ActivitySchemaError(f"{where}: {why}")


def _type_name(hint: object) -> str:
    if isinstance(hint, type):
        return hint.__qualname__
    return str(hint).replace("typing.", "")


def _unwrap(hint: object) -> object:
    """``hint`` without ``Annotated``, ``Required``/``NotRequired``, ``NewType`` and aliases."""
    alias_type = getattr(typing, "TypeAliasType", None)
    while True:
        origin = typing.get_origin(hint)
        if origin in (Annotated, Required, NotRequired):
            hint = typing.get_args(hint)[0]
        elif isinstance(hint, typing.NewType):
            hint = hint.__supertype__
        elif alias_type is not None and isinstance(hint, alias_type):
            hint = hint.__value__
        else:
            return hint


def _marker(hint: object) -> object:
    """``Required`` or ``NotRequired`` when ``hint`` is marked so (through ``Annotated``)."""
    while (origin := typing.get_origin(hint)) is Annotated:
        hint = typing.get_args(hint)[0]
    return origin if origin in (Required, NotRequired) else None


def _split_optional(hint: object) -> tuple[object, bool]:
    """``(T, True)`` for ``T | None``; ``(hint, False)`` otherwise."""
    hint = _unwrap(hint)
    if typing.get_origin(hint) in (Union, types.UnionType):
        members = typing.get_args(hint)
        rest = tuple(m for m in members if m is not type(None))
        if len(rest) < len(members):
            return (_unwrap(rest[0]) if len(rest) == 1 else Union[rest]), True  # noqa: UP007
    return hint, False


def _hints(cls: object, where: _Where | str) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls, include_extras=True)
    except (NameError, TypeError, AttributeError) as exc:
        raise _refuse(where, f"cannot resolve the type hints of {_type_name(cls)}: {exc}") from exc


def _is_record(hint: object) -> bool:
    return isinstance(hint, type) and (
        dataclasses.is_dataclass(hint) or issubclass(hint, BaseModel) or typing.is_typeddict(hint)
    )


def _of_values(values: tuple[object, ...], where: _Where, what: str) -> str:
    if values and all(isinstance(v, bool) for v in values):
        return "Bool"
    if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "Long"
    if values and all(isinstance(v, str) for v in values):
        return "String"
    raise _refuse(where, f"{what} needs values that are all str, all int or all bool")


def _cedar_type(hint: object, where: _Where, stack: tuple[type, ...]) -> CedarType:
    hint = _unwrap(hint)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any or hint is object:
        raise _refuse(where, f"{_type_name(hint)} has no Cedar type; {_HINT}")
    if origin in (Union, types.UnionType):
        if type(None) in args:
            raise _refuse(where, f"{_type_name(hint)} may be None; only attributes can be optional")
        raise _refuse(where, f"the union {_type_name(hint)} has no Cedar type (one type each)")
    if origin is Literal:
        return _of_values(args, where, f"{_type_name(hint)}")
    if origin in _SETS:
        if not args:
            raise _refuse(where, f"{_type_name(hint)} needs an element type, as in list[str]")
        return CedarSet(_cedar_type(args[0], where, stack))
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return CedarSet(_cedar_type(args[0], where, stack))
        raise _refuse(where, f"the fixed-length {_type_name(hint)} has no Cedar type; {_HINT}")
    if origin in _MAPS:
        raise _refuse(where, f"{_type_name(hint)} is a map and Cedar has none; {_HINT}")
    if not isinstance(hint, type):
        raise _refuse(where, f"{_type_name(hint)} has no Cedar type; {_HINT}")
    if issubclass(hint, enum.Enum):
        return _of_values(tuple(m.value for m in hint), where, f"enum {hint.__qualname__}")
    if issubclass(hint, bool):
        return "Bool"
    if issubclass(hint, float):
        raise _refuse(
            where,
            "float has no Cedar type (Cedar has no floating-point numbers); "
            "use int (say, minor units) or str",
        )
    if issubclass(hint, int):
        return "Long"
    if issubclass(hint, str):
        return "String"
    if _is_record(hint):
        return _record(hint, where, stack)
    if hint in _SETS or hint is tuple:
        raise _refuse(where, f"{hint.__qualname__} needs an element type, as in list[str]")
    if hint in _MAPS or issubclass(hint, collections.abc.Mapping):
        raise _refuse(where, f"{hint.__qualname__} is a map and Cedar has none; {_HINT}")
    raise _refuse(where, f"{hint.__qualname__} has no Cedar type; {_HINT}")


def _attr(
    name: str, hint: object, where: _Where, stack: tuple[type, ...], default: bool
) -> CedarAttr:
    inner, nullable = _split_optional(hint)
    return CedarAttr(name, _cedar_type(inner, where, stack), optional=default or nullable)


def _record(cls: type, where: _Where, stack: tuple[type, ...]) -> CedarRecord:
    """The record of a dataclass, pydantic model or TypedDict, fields in order."""
    if cls in stack:
        raise _refuse(where, f"{cls.__qualname__} contains itself; Cedar records cannot recurse")
    stack = (*stack, cls)
    attrs: list[CedarAttr] = []
    if dataclasses.is_dataclass(cls):
        hints = _hints(cls, where)
        for f in dataclasses.fields(cls):
            has_default = (
                f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
            )
            hint = hints.get(f.name, Any)
            attrs.append(_attr(f.name, hint, where.child(f.name), stack, has_default))
    elif issubclass(cls, BaseModel):
        for name, info in cls.model_fields.items():
            # temporalio's pydantic converter serialises by alias.
            key = info.serialization_alias or info.alias or name
            hint = info.annotation
            attrs.append(_attr(key, hint, where.child(key), stack, not info.is_required()))
    else:
        hints = _hints(cls, where)
        required = getattr(cls, "__required_keys__", frozenset(hints))
        for name, hint in hints.items():
            # __required_keys__ misses NotRequired[...] under postponed
            # annotations: the resolved hint still says.
            marked = _marker(hint)
            optional = marked is NotRequired or (marked is None and name not in required)
            attrs.append(_attr(name, hint, where.child(name), stack, optional))
    return CedarRecord(tuple(attrs))


# --- the activity -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ActivityArguments:
    """What a policy sees of one activity's calls."""

    #: The ``@activity.defn`` name: the Cedar action and resource id.
    activity_type: str
    #: ``module:qualname`` of the function, for messages and comments.
    origin: str
    #: The type of ``context.arguments``.
    arguments: CedarRecord
    #: ``object`` (one record parameter), ``by name`` or ``none``.
    shape: Literal["object", "by name", "none"]


def activity_arguments(
    fn: Callable[..., object], activity_type: str, *, skip_self: bool = False
) -> ActivityArguments:
    """The ``context.arguments`` type of ``fn``'s calls, from its type hints.

    Args:
        fn: The activity function (a ``@governed`` wrapper is looked through).
        activity_type: Its ``@activity.defn`` name.
        skip_self: ``fn`` is a method taken from its class: drop ``self``.

    Raises:
        ActivitySchemaError: a parameter or field has no Cedar type; the
            message names it.
    """
    origin = f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', repr(fn))}"
    try:
        params = [
            p
            for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError) as exc:
        raise ActivitySchemaError(f"{origin}: has no signature to read: {exc}") from exc
    if skip_self and params:
        params = params[1:]
    hints = _hints(fn, origin)
    for p in params:
        if p.name not in hints:
            raise ActivitySchemaError(f"{origin}: parameter {p.name!r} has no type hint")
    try:
        if not params:
            record = CedarRecord((CedarAttr("args", CedarSet("String")),))
            return ActivityArguments(activity_type, origin, record, "none")
        if len(params) == 1:
            hint, nullable = _split_optional(hints[params[0].name])
            if isinstance(hint, type) and _is_record(hint):
                if nullable:
                    raise _refuse(
                        _Where(params[0].name),
                        "an object parameter that may be None has no one shape for the policy; "
                        "make it required",
                    )
                record = _record(hint, _Where(), ())
                return ActivityArguments(activity_type, origin, record, "object")
        # Several arguments, or one that is not an object: one record by
        # parameter name. prepare demands every positional argument, so only
        # a parameter that may be None is optional.
        attrs = tuple(_attr(p.name, hints[p.name], _Where(p.name), (), False) for p in params)
        return ActivityArguments(activity_type, origin, CedarRecord(attrs), "by name")
    except ActivitySchemaError as exc:
        raise ActivitySchemaError(f"{origin}: {exc}") from None


# --- the bundle ---------------------------------------------------------------

_ENVIRONMENT: Final = """\
type Environment = {
  attested?: Bool,
  digest?: String,
  python?: String,
  platform?: String,
  build_id?: String,
  image_digest?: String,
};
"""


@dataclass(frozen=True, slots=True)
class StarterBundle:
    """The three files of a starting bundle, as text."""

    policies: str
    schema: str
    entities: str
    policy_id: str


def _example_condition(arguments: CedarRecord) -> str | None:
    for a in arguments.attrs:
        if a.optional:
            continue
        if a.type == "Long":
            return f"{_access(a.name)} <= 1000"
        if a.type == "String":
            return f'{_access(a.name)} == "..."'
        if a.type == "Bool":
            return f"!{_access(a.name)}"
    return None


def starter_bundle(args: ActivityArguments, group: str) -> StarterBundle:
    """Schema, one permit for ``group`` and the entities naming it.

    Raises:
        ActivitySchemaError: ``group`` or the activity type is not printable text.
    """
    action = args.activity_type
    group_lit = cedar_string(group)
    action_lit = cedar_string(action)
    shown = render(args.arguments)
    schema = (
        f"// Generated by `ecp policy init` from {args.origin}.\n"
        "// Principals are users in groups (roles); the resource is the governed\n"
        "// activity itself; the context carries the call's arguments (from the\n"
        "// activity's type hints), its purpose, the executor's attested environment\n"
        "// claims and how the initiator was established.\n"
        f"entity {ROLE_TYPE};\n"
        f"entity {PRINCIPAL_TYPE} in [{ROLE_TYPE}];\n"
        f"entity {RESOURCE_TYPE};\n"
        "\n"
        f"{_ENVIRONMENT}"
        "\n"
        f"action {_name(action)} appliesTo {{\n"
        f"  principal: [{PRINCIPAL_TYPE}],\n"
        f"  resource: [{RESOURCE_TYPE}],\n"
        "  context: {\n"
        f"    arguments: {render(args.arguments, 2)},\n"
        "    purpose: String,\n"
        "    environment: Environment,\n"
        "    // How the initiator was established: key, oidc or unauthenticated.\n"
        "    authentication: String,\n"
        "  },\n"
        "};\n"
    )
    policy_id = f"{action}-by-{group}"
    how = {
        "object": "the fields of its one argument",
        "by name": "its arguments by parameter name",
        "none": 'no arguments (shown as {"args": []})',
    }[args.shape]
    lines = [
        f"// Starting policy for {action_lit}, written by `ecp policy init`",
        f"// from {args.origin}.",
        "// Nothing runs unless a permit allows it, and a matching forbid always wins.",
        "//",
        f"// context.arguments holds {how}:",
        f"//   {shown}",
    ]
    example = _example_condition(args.arguments)
    if example is not None:
        lines += [
            "// Narrow the permit with a condition on them, for example",
            f"//   when {{ {example} }}",
        ]
    if any(a.optional for a in args.arguments.attrs):
        lines.append("// An optional attribute (name?) needs a `has` test before it is read.")
    lines += [
        "",
        f"@id({cedar_string(policy_id)})",
        f"@reason({cedar_string(f'members of {group} may run {action}')})",
        '@max_attempts("1")',
        "permit (",
        f"  principal in {ROLE_TYPE}::{group_lit},",
        f"  action == Action::{action_lit},",
        "  resource",
        ");",
        "",
    ]
    entity = {"uid": {"type": ROLE_TYPE, "id": group}, "attrs": {}, "parents": []}
    entities = "[\n  " + json.dumps(entity, ensure_ascii=False) + "\n]\n"
    return StarterBundle("\n".join(lines), schema, entities, policy_id)
