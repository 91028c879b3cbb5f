"""The keyword index's text analysis: loading tantivy, the English analyzer, the content read for indexing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..errors import MissingDependencyError

if TYPE_CHECKING:
    from ..engine.store import Engine

#: The analysis chain, recorded with a persisted index (one recorded with another is rebuilt).
ANALYZER = "simple|remove_long40|lowercase|stop_en|stem_en"
_TOKENIZER = "aether_en"


def _tantivy() -> Any:
    try:
        import tantivy
    except ImportError as exc:
        raise MissingDependencyError(
            "keyword and hybrid search need tantivy: pip install 'aether[hybrid]'"
        ) from exc
    return tantivy


def available() -> bool:
    """Whether the keyword library (tantivy) can be imported."""
    try:
        _tantivy()
    except MissingDependencyError:
        return False
    return True


def _analyzer(tv: Any) -> Any:
    # Stemming and English stop words: on SciFact nDCG@10 is 0.685 with them, as in BEIR's
    # Elasticsearch baseline (0.665), and clearly less without (tantivy's "default" tokenizer).
    return (
        tv.TextAnalyzerBuilder(tv.Tokenizer.simple())
        .filter(tv.Filter.remove_long(40))
        .filter(tv.Filter.lowercase())
        .filter(tv.Filter.stopword("english"))
        .filter(tv.Filter.stemmer("english"))
        .build()
    )


def iter_contents(engine: Engine, start: int, end: int) -> Iterator[tuple[int, str]]:
    """``(row, content)`` for rows ``[start, end)``, read column-wise from the table's chunks."""
    for lo, values in engine.table.column_slices("content", start, end):
        # A list tail is sliced as it is; a sealed Arrow chunk converts one column slice at once.
        texts = values if isinstance(values, list) else values.to_pylist()
        for i, txt in enumerate(texts):
            yield lo + i, txt or ""
