"""Before execution: keys, trust, policy, grants, approvals, attestation, verification."""

__all__: list[str] = []
