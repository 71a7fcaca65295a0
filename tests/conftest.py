"""Fixtures that more than one test module uses."""

import pytest
from helpers import demo_overrides

from adatosk.config import load_config
from adatosk.train import engine


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> list[str]:
    """The overrides of a tiny AdaTosk-dagger run on the demo data, trained for two steps (one per module)."""
    overrides = demo_overrides(tmp_path_factory.mktemp("demo")) + ["train.epochs=1"]
    engine.train(load_config(overrides), max_steps=2)
    return overrides
