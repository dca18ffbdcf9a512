"""YAML recipes: the section registry, the built-in sections, and ``Recipe``/``load_recipe``/``parse_recipe``."""

from converters.recipe import builtin  # noqa: F401  (registers the built-in sections)
from converters.recipe.core import Recipe, load_recipe, parse_recipe
from converters.recipe.sections import SECTIONS, expect_mapping, expect_type, named_component, section

__all__ = ["Recipe", "load_recipe", "parse_recipe", "SECTIONS", "expect_mapping", "expect_type", "named_component",
           "section"]
