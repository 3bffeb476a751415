"""Suite-wide test configuration: the declared markers, applied from the fixtures.

A test that needs the Temporal dev server or PostgreSQL reaches it through a
fixture; marking by fixture keeps ``-m "not temporal"`` and ``-m postgres``
true without every test having to remember its marker.
"""

from __future__ import annotations

from pathlib import Path

import pytest

#: Fixtures (directly or through others) that start or need each service.
_TEMPORAL_FIXTURES = frozenset({"temporal_env"})
_POSTGRES_FIXTURES = frozenset({"pg_url", "pg_database"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if names & _TEMPORAL_FIXTURES:
            item.add_marker(pytest.mark.temporal)
        # Back-end-parametrised fixtures reach PostgreSQL via getfixturevalue.
        callspec = getattr(item, "callspec", None)
        params = {str(v) for v in callspec.params.values()} if callspec else set()
        if names & _POSTGRES_FIXTURES or "postgres" in params:
            item.add_marker(pytest.mark.postgres)


@pytest.fixture(autouse=True)
def _remembered_checkpoints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test remembers checkpoints in its own file, never in the user's config dir.

    `ecp ledger verify-receipt` keeps the newest checkpoint it verified per
    log; shared across tests (which reuse origins) that memory would leak.
    """
    monkeypatch.setenv("ECP_CHECKPOINT_STATE", str(tmp_path / "remembered-checkpoints.json"))
