"""Fixtures for the authority tests: real keys, a pinned clock, the example bundle."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from ecp.authority._clock import FixedClock
from ecp.authority._policy import PolicyBundle
from ecp.authority._replay import InMemoryReplayGuard
from tests.authority.support import EXAMPLE_BUNDLE, T0, Keys, good_grant, make_keys, signed


@pytest.fixture(scope="session")
def keys() -> Keys:
    return make_keys()


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(T0)


@pytest.fixture(scope="session")
def bundle() -> PolicyBundle:
    b = PolicyBundle.load(EXAMPLE_BUNDLE)
    b.validate()
    return b


@pytest.fixture
def replay() -> InMemoryReplayGuard:
    return InMemoryReplayGuard()


@pytest.fixture
def make_grant(keys: Keys) -> Callable[..., bytes]:
    """Serialised envelope of a good grant, with optional field changes."""

    def make(**changes: object) -> bytes:
        return signed(good_grant(keys.authority.key_id, **changes), keys.authority).to_json()

    return make
