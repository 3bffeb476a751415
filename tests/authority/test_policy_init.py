"""Policies for one's own activities: schemas from type hints, arguments by parameter name."""

from __future__ import annotations

import enum
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal, NotRequired, Optional, TypedDict

import pytest
from pydantic import BaseModel, Field
from temporalio import activity
from temporalio.converter import DataConverter
from temporalio.testing import ActivityEnvironment

from ecp.activities._authority_side import AuthorityActivities, policy_arguments
from ecp.activities._contracts import (
    AuthorizeInput,
    DecisionResult,
    EvaluateInput,
    PrepareInput,
    PrepareResult,
)
from ecp.activities._executor_side import ExecutorActivities
from ecp.activities.examples import change_infrastructure, payout
from ecp.authority._attestation import measure_environment
from ecp.authority._clock import FixedClock
from ecp.authority._keys import Ed25519FileSigner
from ecp.authority._policy import Effect, PolicyBundle, PolicyRequest
from ecp.authority._policy_init import (
    ActivityArguments,
    ActivitySchemaError,
    activity_arguments,
    render,
    starter_bundle,
)
from ecp.authority._truststore import TrustStore
from tests.authority.support import EXAMPLE_BUNDLE, T0

# --- activities of every shape ---------------------------------------------------


@dataclass
class Line:
    sku: str
    quantity: int
    tags: list[str] = field(default_factory=list)


@dataclass
class Order:
    order_id: str
    lines: list[Line]
    rush: bool = False
    note: str | None = None


class Customer(BaseModel):
    name: str
    vip: bool = False
    tier: Literal["gold", "silver"] = "silver"
    account: str = Field(alias="accountId")


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Ticket(TypedDict):
    title: str
    severity: int
    assignee: NotRequired[str]


class Loose(TypedDict, total=False):
    label: str


Reserved = TypedDict("Reserved", {"in": str, "my-key": int})


@activity.defn(name="shape.positional")
async def positional(a: int, b: str, c: list[int]) -> int:
    return a


@activity.defn(name="transfer")
async def transfer(amount: int, currency: str, memo: Optional[str], when: tuple[int, ...]) -> None:  # noqa: UP045
    return None


@activity.defn
async def single_int(amount: int) -> None:
    return None


@activity.defn
async def nothing() -> None:
    return None


@activity.defn
async def order(o: Order) -> None:
    return None


@activity.defn
async def customer(c: Customer) -> None:
    return None


@activity.defn
async def ticket(t: Ticket, color: Color, loose: Loose, r: Reserved) -> None:
    return None


class Service:
    @activity.defn(name="svc.run")
    async def run(self, count: int, name: Annotated[str, "doc"]) -> None:
        return None


def args_of(fn: Any, name: str = "x", **kw: Any) -> ActivityArguments:
    return activity_arguments(fn, name, **kw)


# --- the mapping ----------------------------------------------------------------


def test_a_request_dataclass_is_its_fields_as_in_the_example_schema() -> None:
    schema = (EXAMPLE_BUNDLE / "schema.cedarschema").read_text()
    for fn, declared in (
        (payout, "{ amount: Long, currency: String, recipient: String }"),
        (
            change_infrastructure,
            "{ target: String, environment: String, change: String, duration_seconds?: Long }",
        ),
    ):
        got = args_of(fn)
        assert got.shape == "object"
        assert render(got.arguments) == declared
        # The hand-written example schema declares the same arguments.
        assert declared.strip("{} ").replace(" ", "") in schema.replace(" ", "")


def test_several_parameters_are_one_record_by_name() -> None:
    got = args_of(positional, "shape.positional")
    assert got.shape == "by name"
    assert render(got.arguments) == "{ a: Long, b: String, c: Set<Long> }"
    got = args_of(transfer)
    assert render(got.arguments) == (
        "{ amount: Long, currency: String, memo?: String, when: Set<Long> }"
    )


def test_one_parameter_that_is_not_an_object_is_by_name_too() -> None:
    assert render(args_of(single_int).arguments) == "{ amount: Long }"
    assert args_of(single_int).shape == "by name"


def test_no_parameters_is_the_empty_args_set() -> None:
    got = args_of(nothing)
    assert got.shape == "none"
    assert render(got.arguments) == "{ args: Set<String> }"


def test_nested_records_defaults_and_optionals() -> None:
    assert render(args_of(order).arguments) == (
        "{ order_id: String, lines: Set<{ sku: String, quantity: Long, tags?: Set<String> }>, "
        "rush?: Bool, note?: String }"
    )


def test_pydantic_models_use_the_serialised_names() -> None:
    assert render(args_of(customer).arguments) == (
        "{ name: String, vip?: Bool, tier?: String, accountId: String }"
    )


def test_typeddicts_enums_and_names_cedar_reserves() -> None:
    assert render(args_of(ticket).arguments) == (
        "{ t: { title: String, severity: Long, assignee?: String }, color: String, "
        'loose: { label?: String }, r: { "in": String, "my-key": Long } }'
    )


def test_a_method_loses_self() -> None:
    got = activity_arguments(Service.run, "svc.run", skip_self=True)
    assert render(got.arguments) == "{ count: Long, name: String }"


@dataclass
class WithFloat:
    lines: list[WithFloatLine]


@dataclass
class WithFloatLine:
    weight: float


@dataclass
class Node:
    name: str
    children: list[Node]


@activity.defn
async def with_float(o: WithFloat) -> None: ...


@activity.defn
async def float_param(a: int, ratio: float) -> None: ...


@activity.defn
async def map_param(d: dict[str, int]) -> None: ...


@activity.defn
async def any_param(a: int, b: Any) -> None: ...


@activity.defn
async def union_param(a: int | str, b: int) -> None: ...


@activity.defn
async def untyped(a, b: int) -> None:  # type: ignore[no-untyped-def]
    ...


@activity.defn
async def bare_list(a: list, b: int) -> None:  # type: ignore[type-arg]
    ...


@activity.defn
async def fixed_tuple(a: tuple[int, str], b: int) -> None: ...


@activity.defn
async def recursive(n: Node) -> None: ...


@activity.defn
async def optional_object(o: Order | None) -> None: ...


@activity.defn
async def none_in_list(a: list[int | None], b: int) -> None: ...


@activity.defn
async def mixed_literal(a: Literal["x", 1], b: int) -> None: ...


@pytest.mark.parametrize(
    ("fn", "words"),
    [
        (with_float, ["field 'lines.weight'", "float", "Cedar has no floating-point"]),
        (float_param, ["parameter 'ratio'", "float"]),
        (map_param, ["parameter 'd'", "map"]),
        (any_param, ["parameter 'b'", "Any"]),
        (union_param, ["parameter 'a'", "union"]),
        (untyped, ["parameter 'a'", "no type hint"]),
        (bare_list, ["parameter 'a'", "element type"]),
        (fixed_tuple, ["parameter 'a'", "fixed-length"]),
        (recursive, ["field 'children'", "contains itself"]),
        (optional_object, ["parameter 'o'", "make it required"]),
        (none_in_list, ["parameter 'a'", "may be None"]),
        (mixed_literal, ["parameter 'a'", "all str, all int or all bool"]),
    ],
)
def test_what_cedar_cannot_type_is_refused_in_one_line_naming_the_field(
    fn: Any, words: list[str]
) -> None:
    with pytest.raises(ActivitySchemaError) as caught:
        args_of(fn)
    msg = str(caught.value)
    assert "\n" not in msg
    assert msg.startswith(f"{__name__}:{fn.__qualname__}: ")
    for w in words:
        assert w in msg, (w, msg)
    assert caught.value.code == "policy_schema_unsupported"


# --- the starting bundle ----------------------------------------------------------


def bundle_for(args: ActivityArguments, group: str = "operators", *users: str) -> PolicyBundle:
    starter = starter_bundle(args, group)
    entities = json.loads(starter.entities)
    entities += [
        {"uid": {"type": "User", "id": u}, "attrs": {}, "parents": [{"type": "Group", "id": group}]}
        for u in users
    ]
    return PolicyBundle(
        Path("starter"),
        policies_text=starter.policies,
        schema_text=starter.schema,
        schema_format="cedar",
        entities_doc=entities,
    )


@pytest.mark.parametrize(
    ("fn", "name"),
    [
        (payout, "payout"),
        (positional, "shape.positional"),
        (nothing, "nothing"),
        (ticket, 'we"ird\\name'),
        (order, "order"),
    ],
)
def test_the_starting_bundle_validates(fn: Any, name: str) -> None:
    b = bundle_for(args_of(fn, name), 'on-call "team"')
    b.validate()
    assert b.policy_ids == (f'{name}-by-on-call "team"',)


def test_the_starting_policy_permits_its_group_once_and_nobody_else() -> None:
    b = bundle_for(args_of(payout, "payout"), "operators", "alice")
    req = PolicyRequest(
        action="payout",
        initiator="alice",
        arguments={"amount": 5, "currency": "EUR", "recipient": "acme"},
    )
    d = b.evaluate(req)
    assert d.effect is Effect.ALLOW
    assert d.scope is not None
    assert d.scope.max_attempts == 1
    assert d.reasons == ("members of operators may run payout",)
    assert b.evaluate(req.model_copy(update={"initiator": "eve"})).effect is Effect.DENY


def test_a_control_character_in_the_group_is_refused() -> None:
    with pytest.raises(ActivitySchemaError, match="printable"):
        starter_bundle(args_of(payout, "payout"), "ops\nteam")


# --- arguments by parameter name ---------------------------------------------------


def test_policy_arguments_shapes() -> None:
    # One object: as is, whatever the names.
    assert policy_arguments([{"amount": 5}], ["request"]) == {"amount": 5}
    assert policy_arguments([{"amount": 5}]) == {"amount": 5}
    # Several, or one that is not an object: by name.
    assert policy_arguments([1, "x", [2]], ["a", "b", "c"]) == {"a": 1, "b": "x", "c": [2]}
    assert policy_arguments([7], ["amount"]) == {"amount": 7}
    assert policy_arguments([{"k": 1}, 2], ["d", "n"]) == {"d": {"k": 1}, "n": 2}
    # Names unknown (an old history), or no arguments: the old shape.
    assert policy_arguments([1, "x"]) == {"args": [1, "x"]}
    assert policy_arguments([1, "x"], ["only-one"]) == {"args": [1, "x"]}
    assert policy_arguments([], []) == {"args": []}


def test_policy_arguments_leave_nulls_out() -> None:
    # Cedar has no null: an Optional left at None is an absent attribute.
    assert policy_arguments([5, None], ["amount", "memo"]) == {"amount": 5}
    assert policy_arguments([{"a": None, "b": {"c": None, "d": 1}, "l": [{"e": None}, None]}]) == {
        "b": {"d": 1},
        "l": [{}, None],
    }


def test_by_name_arguments_meet_the_generated_schema() -> None:
    b = bundle_for(args_of(transfer, "transfer"), "operators", "alice")
    names = ["amount", "currency", "memo", "when"]

    def decide(args: list[object], param_names: Sequence[str]) -> Effect:
        req = PolicyRequest.model_validate(
            {
                "action": "transfer",
                "initiator": "alice",
                "arguments": policy_arguments(args, param_names),
            }
        )
        return b.evaluate(req).effect

    assert decide([5, "EUR", None, [1, 2]], names) is Effect.ALLOW
    assert decide([5, "EUR", "rent", []], names) is Effect.ALLOW
    # The old {"args": [...]} shape has no schema: denied.
    assert decide([5, "EUR", None, [1, 2]], []) is Effect.DENY


# --- the names travel: prepare -> evaluate / authorize -------------------------------


@pytest.fixture
def executor() -> ExecutorActivities:
    return ExecutorActivities(
        Ed25519FileSigner.generate(),
        measure_environment(["ecp.activities.examples"]),
        [positional, payout, nothing],
    )


async def test_prepare_reports_the_parameter_names(executor: ExecutorActivities) -> None:
    env = ActivityEnvironment()
    got = await env.run(executor.prepare, PrepareInput("shape.positional", [1, "x", [2, 3]]))
    assert got.param_names == ["a", "b", "c"]
    assert got.args == [1, "x", [2, 3]]
    got = await env.run(
        executor.prepare,
        PrepareInput("payout", [{"amount": 5, "currency": "EUR", "recipient": "r"}]),
    )
    assert got.param_names == ["request"]
    got = await env.run(executor.prepare, PrepareInput("nothing", []))
    assert got.param_names == []


def test_histories_without_names_still_decode() -> None:
    conv = DataConverter.default.payload_converter
    for cls, old in (
        (PrepareResult, {"attestation": "a", "environment_digest": "d", "args": [1]}),
        (
            EvaluateInput,
            {"action": "x", "args": [1], "initiator": "i", "purpose": "", "attestation": ""},
        ),
        (
            AuthorizeInput,
            {
                "decision_json": "{}",
                "approvals": [],
                "action": "x",
                "args": [1],
                "initiator": "i",
                "activity_id": "a",
                "purpose": "",
                "attestation": "",
            },
        ),
    ):
        (decoded,) = conv.from_payloads(conv.to_payloads([old]), [cls])
        assert decoded.param_names == []


async def test_the_authority_decides_on_arguments_by_name() -> None:
    bundle = bundle_for(args_of(positional, "shape.positional"), "operators", "alice")
    authority = AuthorityActivities(
        bundle=bundle,
        signer=Ed25519FileSigner.generate(),
        trust=TrustStore,
        clock=FixedClock(T0),
        allow_unauthenticated=True,
    )
    inp = EvaluateInput("shape.positional", [1, "x", [2]], "alice", "test", "")
    env = ActivityEnvironment()
    by_name: DecisionResult = await env.run(
        authority.evaluate, replace(inp, param_names=["a", "b", "c"])
    )
    assert by_name.effect == Effect.ALLOW.value, by_name.reasons
    unnamed: DecisionResult = await env.run(authority.evaluate, inp)
    assert unnamed.effect == Effect.DENY.value
    assert "failed to build request" in " ".join(unnamed.reasons)
