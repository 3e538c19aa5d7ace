"""Mask of group ids -> composition record (``segcap.composition/2``; ``/1`` still read) -> prompt text; see DESIGN.md.

- :mod:`composition.extract`: ``extract(mask, table, image=...)`` and ``python -m composition.extract`` (folder of masks
  -> JSON Lines); tested against the straightforward per-class extractor in ``bench/reference_extractor.py``.
- :mod:`composition.relations`: the relation rules (top-down: x right, y down, "above" = smaller y).
- :mod:`composition.config`: ``CompositionConfig`` thresholds, mirrored by ``configs/composition.yaml``.
- :mod:`composition.schema`: the JSON Schema (``schema.json``), ``validate``, ``read_jsonl``, ``write_jsonl``.
- :mod:`composition.text`: ``to_prompt(record)``, versioned by ``PROMPT_VERSION``.
- :mod:`composition.features`: ``vector(record, num_classes)`` for the nearest-neighbour baseline.
- :mod:`composition.show`: ``python -m composition.show`` (table, prompt, overlay PNG).
"""
