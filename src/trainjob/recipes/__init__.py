"""Recipes by name: `--recipe tutorial` (default, the tutorial's exact training), `--recipe fast` (from scratch, fast)
and `--recipe transfer` (a pretrained backbone, for photos)."""

from trainjob.recipes.base import Recipe
from trainjob.recipes.fast import FastRecipe
from trainjob.recipes.transfer import TransferRecipe
from trainjob.recipes.tutorial import TutorialRecipe

RECIPES: dict[str, type[Recipe]] = {r.name: r for r in (TutorialRecipe, FastRecipe, TransferRecipe)}


def get_recipe(name: str) -> type[Recipe]:
    return RECIPES[name]
