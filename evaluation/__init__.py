"""Caption evaluation: pycocoevalcap's COCO metrics, per-category tables, the human-agreement ceiling, reports.

- :mod:`evaluation.metrics`: ``score_captions``, ``CocoScorer`` (one tokenizer pass, one METEOR JVM), ``human_ceiling``
- :mod:`evaluation.predictions`: ``read_predictions`` (COCO results JSON, validated against a split)
- :mod:`evaluation.report`: ``write_report`` (scores.json, scores.md, scores.png for several systems)
- :mod:`evaluation.score`: the CLI, ``python -m evaluation.score`` (and the public names above)
"""
