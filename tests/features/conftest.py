"""Every feature test module ends with torchcodec's helper process stopped (tests/features/isolated.py): a
fork of the test process while the helper's threads run can inherit a lock one of them held."""
import pytest

from tests.features import isolated


@pytest.fixture(scope="module", autouse=True)
def _stop_the_helper():
    yield
    isolated.shutdown()
