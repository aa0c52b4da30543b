"""The toy problem shared by the unlearning tests, built once per session."""

from __future__ import annotations

import pytest
from unlearning_toy import Toy, make_toy


@pytest.fixture(scope="session")
def toy() -> Toy:
    return make_toy()
