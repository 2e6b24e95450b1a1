"""Suite-wide fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from trioserver import testing_postgres


@pytest.fixture(autouse=True)
def _recycle_test_databases() -> Iterator[None]:
    """With TRIOSERVER_TEST_POSTGRES, give back the databases a test's servers used once the
    test (and every server it started) has ended: the next test gets them empty."""
    yield
    testing_postgres.release_all()
