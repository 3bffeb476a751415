"""The custom search attributes ECP sets.

So ops can filter in the Temporal UI (e.g. ``ECPDecision = "deny"``).
"""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

__all__ = [
    "ALL_KEYS",
    "SA_ACTION",
    "SA_DECISION",
    "SA_GRANT_ID",
    "SA_INITIATOR",
    "SA_OUTCOME",
    "SA_POLICY_DIGEST",
]

SA_DECISION = SearchAttributeKey.for_keyword("ECPDecision")
SA_INITIATOR = SearchAttributeKey.for_keyword("ECPInitiator")
SA_POLICY_DIGEST = SearchAttributeKey.for_keyword("ECPPolicyDigest")
SA_ACTION = SearchAttributeKey.for_keyword("ECPAction")
SA_GRANT_ID = SearchAttributeKey.for_keyword("ECPGrantId")
SA_OUTCOME = SearchAttributeKey.for_keyword("ECPOutcome")

ALL_KEYS = (SA_DECISION, SA_INITIATOR, SA_POLICY_DIGEST, SA_ACTION, SA_GRANT_ID, SA_OUTCOME)
