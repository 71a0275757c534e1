"""The recipes under ``configs/`` (the commands in the model cards) stay loadable as the code changes."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from napari_isfl.training.config import load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
RECIPES = sorted(CONFIGS.glob("*.yaml"))


def test_configs_are_found() -> None:
    assert len(RECIPES) >= 2, f"no recipes under {CONFIGS}"


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_recipe_loads_and_names_existing_case_lists(path: Path) -> None:
    config = load_config(path)
    assert config.model.spatial_dims in (2, 3)
    assert len(config.data.crop_size) == config.model.spatial_dims
    for source in [*config.data.train, *config.data.val]:
        if source["type"] != "csv":
            continue
        case_list = Path(source["path"])
        assert case_list.is_file(), f"{path.name}: case list {case_list} is missing"
        with case_list.open(newline="") as handle:
            assert next(csv.DictReader(handle), None) is not None, f"{case_list} has no cases"
