import json
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def dynres_vectors() -> dict:
    return json.loads((DATA / "dynres-vectors.json").read_text())
