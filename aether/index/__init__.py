"""Per-bucket FAISS indexes, index recipes and the recall-preserving filtered-search planner."""

from .bucketed import BucketedIndex, IndexState, attach_default, find_index, use_recipe
from .recipes import PlannerParams, Recipe, Tier, load_recipe, recipe_from_dict

__all__ = [
    "BucketedIndex",
    "IndexState",
    "PlannerParams",
    "Recipe",
    "Tier",
    "attach_default",
    "find_index",
    "load_recipe",
    "recipe_from_dict",
    "use_recipe",
]
