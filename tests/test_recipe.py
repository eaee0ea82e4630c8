from __future__ import annotations

from pathlib import Path

import pytest
import tomllib

from edgefer.errors import ConfigError
from edgefer.files import read_toml, to_toml
from edgefer.training.recipe import Recipe


def test_roundtrip_through_toml(tmp_path):
    recipe = Recipe(epochs=3, lr=0.01)
    path = tmp_path / "r.toml"
    path.write_text(to_toml(recipe.to_dict()))
    assert Recipe.load(path) == recipe


def test_toml_leaves_unset_values_out():
    """TOML has no null: an unset value is left out, not an error."""
    assert tomllib.loads(to_toml({"a": 1, "b": None, "c": {"d": None}})) == {"a": 1, "c": {}}


@pytest.mark.parametrize(("text", "match"), [
    ("epochs = 0\n", "epochs"),
    ("class_weights = 'sometimes'\n", "class_weights"),
    ("sam_rho = -0.05\n", "sam_rho"),
    ("learning_rate = 0.1\n", "unknown recipe key 'learning_rate'"),
    ("[augment]\nspin = 3\n", "augment.spin"),
    ("epochs = \n", "invalid TOML"),
    ("epochs = 'three'\n", "recipe key 'epochs' must be a whole number"),
    ("bf16 = 1\n", "recipe key 'bf16' must be true or false"),
    ("[augment]\nerase_area = 0.1\n", "recipe key 'augment.erase_area' must be a list"),
])
def test_bad_recipes_fail_with_the_key(tmp_path, text, match):
    path = tmp_path / "r.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        Recipe.load(path)


def test_missing_file():
    with pytest.raises(ConfigError, match="not found"):
        read_toml("/nonexistent/recipe.toml")


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "engines" / "recipes").glob("*.toml")),
                         ids=lambda path: path.name)
def test_every_shipped_recipe_loads(path):
    assert Recipe.load(path).epochs >= 1
