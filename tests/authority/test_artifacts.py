"""Artifacts before execution: model, tree digest, policy view, grant binding, attestations."""

from __future__ import annotations

import hashlib
import json
import os
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ecp.authority._artifact import (
    ArtifactMismatchError,
    ArtifactRef,
    ArtifactRefusedError,
    describe_directory,
    describe_file,
    describe_image,
    parse_artifacts,
    policy_view,
    walk_tree,
)
from ecp.authority._artifact_attestation import (
    ArtifactAttestationError,
    verify_artifact_attestation,
)
from ecp.authority._canonical import canonical_json, digest_json
from ecp.authority._clock import FixedClock
from ecp.authority._dsse import Envelope, sign_envelope
from ecp.authority._grant import issue_grant
from ecp.authority._intoto import INTOTO_PAYLOAD_TYPE, STATEMENT_TYPE_V1
from ecp.authority._keys import Ed25519FileSigner
from ecp.authority._policy import Effect, PolicyBundle, PolicyRequest
from ecp.authority._replay import InMemoryReplayGuard
from ecp.authority._truststore import KeyRole, TrustedKey, TrustStore
from ecp.authority._verify import verify_grant
from tests.authority.support import ENV_DIGEST, T0, Keys, good_call, good_expected

DIGEST = "sha256:" + "ab" * 32


def _image(uri: str, digest: str = DIGEST) -> dict[str, object]:
    return {"name": "image", "kind": "oci", "uri": uri, "digest": digest}


# --- the model ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("item", "why"),
    [
        (_image("registry.example.com/ml/serving:latest"), "by tag"),
        (_image("registry.example.com/ml/serving"), "by tag"),
        (_image(f"registry.example.com/ml/serving@sha256:{'cd' * 32}"), "not the artifact's"),
        (
            {"name": "m", "kind": "file", "uri": "model.bin", "digest": DIGEST, "size": 1},
            "absolute",
        ),
        ({"name": "m", "kind": "file", "uri": "/m.bin", "digest": DIGEST}, "needs its size"),
        ({"name": "m", "kind": "url", "uri": "ftp://x/m", "digest": DIGEST, "size": 1}, "http"),
        ({"name": "Model", "kind": "file", "uri": "/m", "digest": DIGEST, "size": 1}, "pattern"),
        ({"name": "m", "kind": "file", "uri": "/m", "digest": "sha256:AB", "size": 1}, "pattern"),
    ],
)
def test_artifacts_that_cannot_be_checked_are_refused(item: dict[str, object], why: str) -> None:
    with pytest.raises(ArtifactRefusedError, match=why):
        parse_artifacts([item])


def test_two_artifacts_with_one_name_are_refused() -> None:
    item = _image(f"registry.example.com/ml/serving@{DIGEST}")
    with pytest.raises(ArtifactRefusedError, match="two artifacts"):
        parse_artifacts([item, item])


def test_an_image_by_digest_is_its_identity() -> None:
    ref = describe_image("image", f"registry.example.com:5000/ml/serving@{DIGEST}")
    assert ref.digest == DIGEST
    assert ref.origin == "registry.example.com:5000/ml/serving"
    assert "size" not in ref.model_dump(mode="json")


# --- digests ------------------------------------------------------------------


def test_tree_digest_is_the_documented_listing(tmp_path: Path) -> None:
    root = tmp_path / "model"
    (root / "layers").mkdir(parents=True)
    (root / "config.json").write_bytes(b"{}")
    (root / "layers" / "0.bin").write_bytes(b"weights")
    (root / "run.sh").write_bytes(b"#!/bin/sh\n")
    os.chmod(root / "run.sh", 0o755)

    def sha(b: bytes) -> str:
        return hashlib.sha256(b).hexdigest()

    # Written out by hand from docs/contracts.md, hashed without ECP's code.
    listing = {
        "format": "ecp.tree/v1",
        "entries": [
            {
                "path": "config.json",
                "type": "file",
                "size": 2,
                "sha256": sha(b"{}"),
                "executable": False,
            },
            {"path": "layers", "type": "dir"},
            {
                "path": "layers/0.bin",
                "type": "file",
                "size": 7,
                "sha256": sha(b"weights"),
                "executable": False,
            },
            {
                "path": "run.sh",
                "type": "file",
                "size": 10,
                "sha256": sha(b"#!/bin/sh\n"),
                "executable": True,
            },
        ],
    }
    jcs = json.dumps(listing, sort_keys=True, separators=(",", ":")).encode()
    digest, size = walk_tree(root)
    assert digest == "sha256:" + sha(jcs)
    assert size == 19
    # An added empty directory, or a changed execute bit, is a different tree.
    (root / "empty").mkdir()
    assert walk_tree(root)[0] != digest


def test_a_symlink_anywhere_in_a_tree_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "model"
    root.mkdir()
    (tmp_path / "outside").write_bytes(b"x")
    os.symlink(tmp_path / "outside", root / "link")
    with pytest.raises(ArtifactMismatchError, match="symbolic link"):
        walk_tree(root)
    with pytest.raises(ArtifactMismatchError, match="symbolic link"):
        describe_file("m", root / "link")


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "model.bin"
    os.mkfifo(fifo)
    with pytest.raises(ArtifactMismatchError, match="not a regular file"):
        describe_file("m", fifo)


# --- the policy -----------------------------------------------------------------


def _request(artifacts: dict[str, object]) -> PolicyRequest:
    return PolicyRequest.model_validate(
        {
            "action": "deploy_model",
            "initiator": "alice",
            "arguments": {"model_name": "fraud", "environment": "staging"},
            "environment": {},
            "artifacts": artifacts,
        },
        strict=False,
    )


def test_a_request_without_artifacts_digests_as_before() -> None:
    req = _request({})
    assert req.digest() == digest_json(
        {k: v for k, v in req.model_dump(mode="json").items() if k != "artifacts"}
    )


def test_the_decision_binds_the_artifact_digests(tmp_path: Path, bundle: PolicyBundle) -> None:
    a = describe_file("model", _write(tmp_path / "a.bin", b"a"))
    b = describe_file("model", _write(tmp_path / "b.bin", b"b"))
    da = bundle.evaluate(_request({"model": policy_view(a)}))
    db = bundle.evaluate(_request({"model": policy_view(b)}))
    assert da.effect is Effect.ALLOW
    assert db.effect is Effect.ALLOW
    assert da.decision_id != db.decision_id


def test_an_approved_digest_set_is_enforced(tmp_path: Path, bundle: PolicyBundle) -> None:
    approved = describe_file("model", _write(tmp_path / "a.bin", b"approved"))
    other = describe_file("model", _write(tmp_path / "b.bin", b"other"))
    policies = (bundle.path / "policies.cedar").read_text() + (
        '\n@id("model-approved-digests")\n@reason("only approved model digests")\n'
        'forbid (principal, action == Action::"deploy_model", resource)\n'
        f'unless {{ ["{approved.digest}"].contains(context.artifacts.model.digest) }};\n'
    )
    strict = PolicyBundle(
        bundle.path,
        policies_text=policies,
        schema_text=(bundle.path / "schema.cedarschema").read_text(),
        schema_format="cedar",
        entities_doc=json.loads((bundle.path / "entities.json").read_text()),
    )
    strict.validate()
    assert strict.evaluate(_request({"model": policy_view(approved)})).effect is Effect.ALLOW
    denied = strict.evaluate(_request({"model": policy_view(other)}))
    assert denied.effect is Effect.DENY
    assert denied.reasons == ("only approved model digests",)


def test_an_action_that_declares_no_artifacts_is_denied_when_given_some(
    bundle: PolicyBundle,
) -> None:
    req = PolicyRequest.model_validate(
        {
            "action": "payout",
            "initiator": "alice",
            "arguments": {"amount": 5, "currency": "EUR", "recipient": "x"},
            "artifacts": {"model": {"kind": "file"}},
        },
        strict=False,
    )
    assert bundle.evaluate(req).effect is Effect.DENY


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# --- the grant ------------------------------------------------------------------


def _grant(
    keys: Keys, bundle: PolicyBundle, model: ArtifactRef, artifacts: tuple[ArtifactRef, ...]
) -> Envelope:
    decision = bundle.evaluate(_request({"model": policy_view(model)}))
    assert decision.effect is Effect.ALLOW, decision.reasons
    return issue_grant(
        decision,
        good_call().model_copy(update={"activity_type": "deploy_model"}),
        initiator="alice",
        environment_digest=ENV_DIGEST,
        signer=keys.authority,
        clock=FixedClock(T0),
        ttl=timedelta(minutes=5),
        artifacts=artifacts,
    )


def test_a_grant_without_artifacts_has_no_artifacts_field(
    tmp_path: Path, keys: Keys, bundle: PolicyBundle
) -> None:
    ref = describe_file("model", _write(tmp_path / "m.bin", b"weights"))
    envelope = _grant(keys, bundle, ref, ())
    assert b'"artifacts"' not in envelope.payload


def test_the_grant_binds_the_artifacts_as_signed(
    tmp_path: Path, keys: Keys, bundle: PolicyBundle
) -> None:
    ref = describe_file("model", _write(tmp_path / "m.bin", b"weights"))
    envelope = _grant(keys, bundle, ref, (ref,))
    vg = verify_grant(
        envelope.to_json(),
        trust=keys.trust,
        expected=good_expected(activity_type="deploy_model", policy_digest=None, decision_id=None),
        clock=FixedClock(T0),
        replay=InMemoryReplayGuard(),
    )
    assert vg.grant.artifacts == (ref,)
    # The payload is the JCS of the model, artifacts included: nothing re-serialised.
    assert canonical_json(vg.grant.model_dump(mode="json")) == envelope.payload


# --- attestations --------------------------------------------------------------


def _statement(digest: str) -> bytes:
    return canonical_json(
        {
            "_type": STATEMENT_TYPE_V1,
            "subject": [{"name": "m", "digest": {"sha256": digest.removeprefix("sha256:")}}],
            "predicateType": "https://slsa.dev/provenance/v1",
            "predicate": {
                "buildDefinition": {"externalParameters": {"repository": "https://git/x"}},
                "runDetails": {"builder": {"id": "https://ci/builder"}},
            },
        }
    )


def test_a_trusted_attestation_reaches_the_policy_view(tmp_path: Path) -> None:
    ref = describe_file("model", _write(tmp_path / "m.bin", b"weights"))
    ci, worker = Ed25519FileSigner.generate(), Ed25519FileSigner.generate()
    trust = TrustStore(
        [
            TrustedKey.create(ci.public_key, [KeyRole.ATTESTER], name="ml-ci"),
            TrustedKey.create(worker.public_key, [KeyRole.WORKER], name="executor"),
        ]
    )
    good = sign_envelope(INTOTO_PAYLOAD_TYPE, _statement(ref.digest), ci).to_json().decode()
    verified = verify_artifact_attestation(good, ref, trust, T0)
    view = policy_view(ref, [verified.claims()])
    assert view["provenance"] == {
        "builder_id": "https://ci/builder",
        "source_repository": "https://git/x",
        "signer": "ml-ci",
    }
    assert view["predicate_types"] == ["https://slsa.dev/provenance/v1"]
    # A trusted key without the attester role cannot vouch for builds.
    by_worker = sign_envelope(INTOTO_PAYLOAD_TYPE, _statement(ref.digest), worker)
    with pytest.raises(ArtifactAttestationError, match="attester"):
        verify_artifact_attestation(by_worker.to_json().decode(), ref, trust, T0)
    other = sign_envelope(INTOTO_PAYLOAD_TYPE, _statement(DIGEST), ci).to_json().decode()
    with pytest.raises(ArtifactAttestationError, match=DIGEST):
        verify_artifact_attestation(other, ref, trust, T0)


def test_a_directory_attestation_names_the_tree_digest(tmp_path: Path) -> None:
    root = tmp_path / "d"
    root.mkdir()
    (root / "w.bin").write_bytes(b"w")
    ref = describe_directory("model", root)
    ci = Ed25519FileSigner.generate()
    trust = TrustStore([TrustedKey.create(ci.public_key, [KeyRole.ATTESTER], name="ml-ci")])
    env = sign_envelope(INTOTO_PAYLOAD_TYPE, _statement(ref.digest), ci).to_json().decode()
    assert verify_artifact_attestation(env, ref, trust, T0).signer == "ml-ci"


# --- hostile requests ------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
_fields = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(["model", "Model", "", "x" * 70]) | st.text(max_size=8),
        "kind": st.sampled_from(["file", "directory", "url", "oci", "tar"]) | _json,
        "uri": st.sampled_from(
            ["/m.bin", "m.bin", "http://h/m", "r.example/m:tag", f"r.example/m@{DIGEST}"]
        )
        | _json,
        "digest": st.sampled_from([DIGEST, "sha256:AB", ""]) | _json,
        "size": st.integers(-2, 2**63) | _json,
        "media_type": _json,
        "attestations": _json,
    },
)


@given(items=st.lists(_fields | _json, max_size=3))
def test_any_artifact_list_is_parsed_or_refused_in_the_error_family(items: list[object]) -> None:
    try:
        refs = parse_artifacts(items)
    except ArtifactRefusedError:
        return
    for ref in refs:
        # Whatever was accepted can be checked: digest-pinned, absolute, sized.
        assert ref.digest.startswith("sha256:")
        if ref.kind == "oci":
            assert ref.uri.endswith("@" + ref.digest)
        else:
            assert ref.size is not None
        if ref.kind in ("file", "directory"):
            assert ref.uri.startswith("/")
