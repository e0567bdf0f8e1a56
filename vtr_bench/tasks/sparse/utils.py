"""lmms-eval hooks of the sparse tasks: those of the shapes tasks, scored over the sparse question types."""

from vtr_bench.tasks.shapes.utils import doc_to_text, doc_to_visual, mean_of_present, scorer  # noqa: F401
from vtr_bench.tiny.sparse import QUESTION_TYPES

process_results = scorer(QUESTION_TYPES)
