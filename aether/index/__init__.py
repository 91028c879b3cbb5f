"""Per-bucket FAISS indexes, index recipes and the recall-preserving filtered-search planner."""

from .bucketed import (
    BucketedIndex,
    IndexState,
    attach_default,
    find_index,
    install_partitions,
    plan_partitions,
    use_recipe,
)
from .partition import PartitionSpec, build_index_bytes
from .recipes import PlannerParams, Recipe, Tier, load_recipe, recipe_from_dict

__all__ = [
    "BucketedIndex",
    "IndexState",
    "PartitionSpec",
    "PlannerParams",
    "Recipe",
    "Tier",
    "attach_default",
    "build_index_bytes",
    "find_index",
    "install_partitions",
    "load_recipe",
    "plan_partitions",
    "recipe_from_dict",
    "use_recipe",
]
