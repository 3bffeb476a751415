"""RFC 6962 / RFC 9162: every case of tests/vectors/merkle.json."""

from __future__ import annotations

import pytest

from ecp.lineage.ledger import _merkle as m
from ecp.lineage.ledger.errors import HashLengthError, ProofError, ProofLengthError, ProofSizeError
from tests.vectors import load_vector_file

V = load_vector_file("merkle.json")
assert isinstance(V, dict)


def _h(x: str) -> bytes:
    return bytes.fromhex(x)


@pytest.mark.parametrize("case", V["hasher"], ids=lambda c: c["desc"])
def test_hasher(case: dict) -> None:
    if case["kind"] == "empty":
        got = m.EMPTY_ROOT
    elif case["kind"] == "leaf":
        got = m.leaf_hash(_h(case["data"]))
    else:
        got = m.node_hash(_h(case["left"]), _h(case["right"]))
    assert got.hex() == case["want"]


def test_reference_tree_roots_and_nodes() -> None:
    rt = V["reference_tree"]
    leaves = [_h(x) for x in rt["leaf_inputs"]]
    for size, want in enumerate(rt["roots_by_size"]):
        assert m.root_of([m.leaf_hash(x) for x in leaves[:size]]).hex() == want
    tree = m.InMemoryTree()
    for x in leaves:
        tree.append(x)
    for level, hashes in enumerate(rt["node_hashes_by_level"]):
        for index, want in enumerate(hashes):
            assert tree.lookup([(level, index)])[(level, index)].hex() == want


@pytest.mark.parametrize("case", V["inclusion"], ids=lambda c: c["source"])
def test_inclusion_case(case: dict) -> None:
    args = (
        case["leafIdx"],
        case["treeSize"],
        _h(case["leafHash"]),
        [_h(p) for p in case["proof"] or []],
        _h(case["root"]),
    )
    if case["wantErr"]:
        with pytest.raises(ProofError):
            m.verify_inclusion(*args)
    else:
        m.verify_inclusion(*args)


@pytest.mark.parametrize("case", V["consistency"], ids=lambda c: c["source"])
def test_consistency_case(case: dict) -> None:
    args = (
        case["size1"],
        case["size2"],
        _h(case["root1"]),
        _h(case["root2"]),
        [_h(p) for p in case["proof"] or []],
    )
    if case["wantErr"]:
        with pytest.raises(ProofError):
            m.verify_consistency(*args)
    else:
        m.verify_consistency(*args)


def test_generated_proofs_match_the_vectors() -> None:
    tree = m.InMemoryTree(m.leaf_hash(_h(x)) for x in V["reference_tree"]["leaf_inputs"])
    n = 0
    for c in V["inclusion"]:
        if not c["wantErr"] and c["treeSize"] <= len(tree):
            assert [p.hex() for p in tree.inclusion_proof(c["leafIdx"], c["treeSize"])] == (
                c["proof"] or []
            )
            n += 1
    for c in V["consistency"]:
        usable = not c["wantErr"] and c["size1"] > 0 and c["size2"] <= len(tree)
        if usable and c["root1"] == tree.root(c["size1"]).hex():
            got = tree.consistency_proof(c["size1"], c["size2"])
            assert [p.hex() for p in got] == (c["proof"] or [])
            n += 1
    assert n >= 8


def test_real_rekor_v2_inclusion_proof() -> None:
    (c,) = V["real_world_inclusion"]
    leaf = m.leaf_hash(_h(c["leaf_data"]))
    proof = [_h(p) for p in c["proof"]]
    m.verify_inclusion(c["leafIdx"], c["treeSize"], leaf, proof, _h(c["root"]))
    with pytest.raises(ProofError):
        m.verify_inclusion(c["leafIdx"] - 1, c["treeSize"], leaf, proof, _h(c["root"]))


def test_all_sizes_generate_verifiable_proofs() -> None:
    tree = m.InMemoryTree(m.leaf_hash(b"%d" % i) for i in range(70))
    for size in range(1, 71):
        root = tree.root(size)
        for i in range(size):
            m.verify_inclusion(
                i, size, tree.lookup([(0, i)])[(0, i)], tree.inclusion_proof(i, size), root
            )
        for old in range(1, size + 1):
            m.verify_consistency(old, size, tree.root(old), root, tree.consistency_proof(old, size))


def test_specific_error_classes() -> None:
    tree = m.InMemoryTree(m.leaf_hash(b"%d" % i) for i in range(5))
    leaf, root = tree.lookup([(0, 1)])[(0, 1)], tree.root()
    proof = tree.inclusion_proof(1)
    with pytest.raises(HashLengthError):
        m.verify_inclusion(1, 5, leaf[:31], proof, root)
    with pytest.raises(ProofSizeError):
        m.verify_inclusion(5, 5, leaf, proof, root)
    with pytest.raises(ProofLengthError):
        m.verify_inclusion(1, 5, leaf, proof[:-1], root)
    with pytest.raises(m.InclusionProofError if hasattr(m, "InclusionProofError") else ProofError):
        m.verify_inclusion(1, 5, leaf, proof, tree.root(4))
    with pytest.raises(ProofSizeError):
        m.verify_consistency(0, 5, root, root, [])
    with pytest.raises(ProofSizeError):
        m.verify_consistency(3, 3, root, root, [root])
