"""`ecp policy init` and `ecp policy test`: starting bundles and tables of expected decisions."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from temporalio import activity
from typer.testing import CliRunner

from ecp.activities._governed import governed
from ecp.authority._policy import PolicyBundle, PolicyRequest
from ecp.cli import app
from tests.authority.support import EXAMPLE_BUNDLE

runner = CliRunner()
TABLE = EXAMPLE_BUNDLE / "tests.json"


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def one_error_line(stderr: str, name: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"error: {name}: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


@dataclass
class Refund:
    order_id: str
    amount: int
    reason: str | None = None


@activity.defn(name="refund")
@governed
async def refund(req: Refund) -> str:
    return req.order_id


@activity.defn(name="ship")
async def ship(order_id: str, quantity: int, express: bool) -> None:
    return None


@activity.defn
async def weigh(order_id: str, kilos: float) -> None:
    return None


def not_an_activity(x: int) -> None:
    return None


class Warehouse:
    @activity.defn(name="warehouse.move")
    async def move(self, sku: str, shelf: int) -> None:
        return None


HERE = __name__


# --- help -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["policy", "--help"], ["init", "validate", "eval", "test"]),
        (["policy", "init", "--help"], ["--activity", "MODULE:FUNCTION", "--dir", "--group"]),
        (["policy", "test", "--help"], ["BUNDLE", "TABLE", "expect", "allow_after_approval"]),
    ],
)
def test_help_is_true(argv: list[str], words: list[str]) -> None:
    code, out, _ = run(*argv)
    assert code == 0
    flat = " ".join(out.split())
    for w in words:
        assert w.lower() in flat.lower(), (w, out)


# --- init -------------------------------------------------------------------------


def test_init_writes_a_bundle_that_validates(tmp_path: Path) -> None:
    d = tmp_path / "refund-policy"
    code, out, err = run("policy", "init", "--activity", f"{HERE}:refund", "--dir", str(d))
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0] == (
        f"wrote {d / 'schema.cedarschema'}: action 'refund', context.arguments "
        "{ order_id: String, amount: Long, reason?: String }"
    )
    assert lines[1].startswith(f"wrote {d / 'policies.cedar'}: permit 'refund-by-operators'")
    assert lines[2] == f"wrote {d / 'entities.json'}: Group 'operators', no members yet"
    assert "note:" not in out  # it is @governed
    assert lines[-1].startswith(f"next: add users to {d / 'entities.json'}")
    assert sorted(p.name for p in d.iterdir()) == [
        "entities.json",
        "policies.cedar",
        "schema.cedarschema",
    ]
    policies = (d / "policies.cedar").read_text()
    for needed in ('@id("refund-by-operators")', "@reason(", '@max_attempts("1")', "permit ("):
        assert needed in policies
    assert json.loads((d / "entities.json").read_text()) == [
        {"uid": {"type": "Group", "id": "operators"}, "attrs": {}, "parents": []}
    ]
    code, out, _ = run("policy", "validate", str(d))
    assert code == 0
    assert out.startswith(f"ok: {d} policies=1 digest=sha256:")


def test_init_then_test_a_positional_activity(tmp_path: Path) -> None:
    d = tmp_path / "ship"
    code, out, err = run(
        "policy", "init", "--activity", f"{HERE}:ship", "--dir", str(d), "--group", "shipping"
    )
    assert code == 0, err
    assert "{ order_id: String, quantity: Long, express: Bool }" in out
    # ship is not @governed: init says how the gate would still govern it.
    assert "note: " in out
    assert "ECP_GOVERNED_ACTIONS" in out
    entities = json.loads((d / "entities.json").read_text())
    entities.append(
        {"uid": {"type": "User", "id": "sam"}, "attrs": {}, "parents": [entities[0]["uid"]]}
    )
    (d / "entities.json").write_text(json.dumps(entities))
    args = {"order_id": "o-1", "quantity": 2, "express": False}
    table = tmp_path / "ship.json"
    table.write_text(
        json.dumps(
            [
                {
                    "name": "a shipper ships",
                    "request": {"action": "ship", "initiator": "sam", "arguments": args},
                    "expect": "allow",
                    "reasons_include": "members of shipping may run ship",
                },
                {
                    "name": "the old positional shape has no schema",
                    "request": {
                        "action": "ship",
                        "initiator": "sam",
                        "arguments": {"args": ["o-1", 2, False]},
                    },
                    "expect": "deny",
                },
                {
                    "name": "nobody else",
                    "request": {"action": "ship", "initiator": "eve", "arguments": args},
                    "expect": "deny",
                },
            ]
        )
    )
    code, out, err = run("policy", "test", str(d), str(table))
    assert code == 0, out + err
    assert out.strip().splitlines()[-1] == "3 passed, 0 failed"


def test_init_takes_a_method_from_its_class(tmp_path: Path) -> None:
    d = tmp_path / "wh"
    code, out, err = run("policy", "init", "--activity", f"{HERE}:Warehouse.move", "--dir", str(d))
    assert code == 0, err
    assert "action 'warehouse.move', context.arguments { sku: String, shelf: Long }" in out
    PolicyBundle.load(d).validate()


def test_init_refuses_to_overwrite(tmp_path: Path) -> None:
    d = tmp_path / "existing"
    d.mkdir()
    (d / "policies.cedar").write_text("// mine\n")
    code, out, err = run("policy", "init", "--activity", f"{HERE}:refund", "--dir", str(d))
    assert code == 1
    assert "already exists" in one_error_line(err, "CliError")
    assert out == ""
    assert (d / "policies.cedar").read_text() == "// mine\n"
    assert sorted(p.name for p in d.iterdir()) == ["policies.cedar"]


@pytest.mark.parametrize(
    ("spec", "error", "words"),
    [
        (f"{HERE}:weigh", "ActivitySchemaError", ["parameter 'kilos'", "float", "Cedar has no"]),
        (f"{HERE}", "CliError", ["expected MODULE:FUNCTION"]),
        ("no_such_module_xyz:f", "CliError", ["cannot import 'no_such_module_xyz'"]),
        (f"{HERE}:missing", "CliError", ["has no 'missing'"]),
        (f"{HERE}:HERE", "CliError", ["not a function"]),
        (f"{HERE}:not_an_activity", "CliError", ["not a Temporal activity"]),
    ],
)
def test_init_errors_are_one_line(tmp_path: Path, spec: str, error: str, words: list[str]) -> None:
    d = tmp_path / "p"
    code, _, err = run("policy", "init", "--activity", spec, "--dir", str(d))
    assert code == 1
    line = one_error_line(err, error)
    for w in words:
        assert w in line, (w, line)
    assert not d.exists()


def test_init_imports_from_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "my_app_acts.py").write_text(
        "from temporalio import activity\n\n"
        "@activity.defn(name='greet')\n"
        "async def greet(name: str, times: int) -> str:\n"
        "    return name\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    monkeypatch.delitem(sys.modules, "my_app_acts", raising=False)
    code, out, err = run("policy", "init", "--activity", "my_app_acts:greet")
    assert code == 0, err
    assert "{ name: String, times: Long }" in out
    PolicyBundle.load(tmp_path / "policy").validate()


# --- test -------------------------------------------------------------------------


def test_the_example_table_passes() -> None:
    code, out, err = run("policy", "test", str(EXAMPLE_BUNDLE), str(TABLE))
    assert code == 0, out + err
    lines = out.strip().splitlines()
    cases = json.loads(TABLE.read_text())
    assert len(lines) == len(cases) + 1
    assert all(line.startswith("ok    ") for line in lines[:-1])
    assert lines[-1] == f"{len(cases)} passed, 0 failed"
    expects = {c["expect"] for c in cases}
    assert expects == {"allow", "deny", "allow_after_approval"}


def test_the_example_table_covers_the_example_bundle() -> None:
    cases = json.loads(TABLE.read_text())
    bundle = PolicyBundle.load(EXAMPLE_BUNDLE)
    seen: set[str] = set()
    for c in cases:
        seen.update(bundle.evaluate(PolicyRequest.model_validate(c["request"])).policy_ids)
    assert seen == set(bundle.policy_ids)


def test_a_mismatch_fails_with_expected_and_got(tmp_path: Path) -> None:
    cases = json.loads(TABLE.read_text())
    cases[0]["expect"] = "deny"
    del cases[0]["reasons_include"]
    cases[2]["reasons_include"] = "no such words"
    table = tmp_path / "t.json"
    table.write_text(json.dumps(cases))
    code, out, _ = run("policy", "test", str(EXAMPLE_BUNDLE), str(table))
    assert code == 1
    lines = out.strip().splitlines()
    assert lines[0] == (
        f"FAIL  {cases[0]['name']}: expected deny, got allow; "
        "reasons: operators may pay out up to 1000 without approval"
    )
    assert lines[2].startswith(
        f"FAIL  {cases[2]['name']}: expected allow_after_approval with a reason including "
        "'no such words', got allow_after_approval; reasons: payouts above 1000"
    )
    assert lines[-1] == f"{len(cases) - 2} passed, 2 failed"


def test_a_yaml_table(tmp_path: Path) -> None:
    yaml = pytest.importorskip("yaml")
    table = tmp_path / "t.yaml"
    table.write_text(yaml.safe_dump(json.loads(TABLE.read_text())))
    code, out, err = run("policy", "test", str(EXAMPLE_BUNDLE), str(table))
    assert code == 0, out + err
    assert out.strip().endswith("passed, 0 failed")


def test_a_yaml_table_without_pyyaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    table = tmp_path / "t.yml"
    table.write_text("[]\n")
    monkeypatch.setitem(sys.modules, "yaml", None)
    code, _, err = run("policy", "test", str(EXAMPLE_BUNDLE), str(table))
    assert code == 1
    assert "needs PyYAML" in one_error_line(err, "PolicyTableError")


_REQ = {"action": "payout", "initiator": "alice", "arguments": {"amount": 1}}


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("{not json", ["not valid JSON"]),
        ('{"name": "x"}', ["a list of cases"]),
        ("[]", ["no cases"]),
        ("[1]", ["case 1", "must be an object"]),
        (json.dumps([{"request": _REQ, "expect": "allow"}]), ["case 1", "needs a name"]),
        (
            json.dumps([{"name": "a", "request": _REQ, "expect": "deny"}] * 2),
            ["case 2 ('a')", "same name"],
        ),
        (
            json.dumps([{"name": "a", "request": _REQ, "expect": "deny", "expected": "x"}]),
            ["case 1 ('a')", "unknown key(s) expected"],
        ),
        (json.dumps([{"name": "a", "request": _REQ}]), ["missing 'expect'"]),
        (json.dumps([{"name": "a", "expect": "deny"}]), ["missing 'request'"]),
        (
            json.dumps([{"name": "a", "request": _REQ, "expect": "permit"}]),
            ["expect must be one of allow, deny, allow_after_approval", "'permit'"],
        ),
        (json.dumps([{"name": "a", "request": [], "expect": "deny"}]), ["request must be"]),
        (
            json.dumps([{"name": "a", "request": {"action": "payout"}, "expect": "deny"}]),
            ["case 1 ('a')", "request field initiator"],
        ),
        (
            json.dumps(
                [{"name": "a", "request": {**_REQ, "colour": 1}, "expect": "deny"}],
            ),
            ["request field colour"],
        ),
        (
            json.dumps([{"name": "a", "request": _REQ, "expect": "deny", "reasons_include": 3}]),
            ["reasons_include must be a non-empty string"],
        ),
        (
            json.dumps(
                [
                    {
                        "name": "a",
                        "request": {**_REQ, "arguments": {"x": float("inf")}},
                        "expect": "deny",
                    }
                ]
            ),
            ["not valid JSON"],
        ),
        (
            json.dumps(
                [{"name": "a", "request": {**_REQ, "arguments": {"x": 2**64}}, "expect": "deny"}]
            ),
            ["case 1 ('a')", "request cannot be decided", "safe integer"],
        ),
    ],
)
def test_a_malformed_table_is_one_typed_line(
    tmp_path: Path, content: str, words: list[str]
) -> None:
    table = tmp_path / "t.json"
    table.write_text(content)
    code, out, err = run("policy", "test", str(EXAMPLE_BUNDLE), str(table))
    assert code == 1
    assert out == ""
    line = one_error_line(err, "PolicyTableError")
    assert str(table) in line
    for w in words:
        assert w in line, (w, line)


def test_a_missing_table_or_bundle(tmp_path: Path) -> None:
    code, _, err = run("policy", "test", str(EXAMPLE_BUNDLE), str(tmp_path / "none.json"))
    assert code == 1
    assert "test table not found" in one_error_line(err, "CliError")
    code, _, err = run("policy", "test", str(tmp_path / "nobundle"), str(TABLE))
    assert code == 1
    assert "not a policy bundle directory" in one_error_line(err, "PolicyBundleError")
