"""Recipes by name: `--recipe tutorial` (default, the tutorial's exact training) and `--recipe fast`."""

from trainjob.recipes.base import Recipe
from trainjob.recipes.fast import FastRecipe
from trainjob.recipes.tutorial import TutorialRecipe

RECIPES: dict[str, type[Recipe]] = {TutorialRecipe.name: TutorialRecipe, FastRecipe.name: FastRecipe}


def get_recipe(name: str) -> type[Recipe]:
    return RECIPES[name]
