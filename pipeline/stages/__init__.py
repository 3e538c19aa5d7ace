"""The stages of a pipeline run, one module each, in the order they run (:data:`STAGES`).

=============  =========================================================================================
data           synthetic.generate, only when the data is absent (or was generated with other options)
segmentation   segmentation.train on the drone set (skipped when ``segmentation_checkpoint`` is given)
scenes         segmentation.scene: a scene head on the segmenter's encoder, fitted on the caption set's categories
               (training split; the val split chooses its L2), into run_dir/scenes; only with ``scene_head: true``
masks          segmentation.predict on every caption-set image (and their top scenes, with ``scene_head: true``)
compositions   composition.extract of the predicted masks, and of the exact masks when the set has them
llm            llm.finetune on the predicted compositions (the pipeline's captioner)
oracle         llm.finetune on the exact-mask compositions (what perfect segmentation would give)
blind          llm.finetune with the composition text removed (what the image content adds)
rag            llm.finetune with retrieval-augmented prompts: composition + the captions of the closest training images
rag_only       llm.finetune with the neighbours' captions and no composition text (the retrieval-only ablation)
scene_only     llm.finetune on the scene line alone (pipeline_scene); composition_only: without it (pipeline_composition)
captioners     captioners.train of the end-to-end captioners asked for (cnn_lstm, vit_gpt2, blip): pixels -> caption
captions       llm.generate, captioners.generate and the lookups: every system asked for (pipeline.systems)
score          evaluation.score of every system, with the human-agreement ceiling
report         report.md: results, segmentation and composition figures, examples
=============  =========================================================================================

A stage is a :class:`~pipeline.stages.base.Stage` (name, upstream, outputs, options dataclass, run) registered in
:data:`STAGES`; adding one is a module here (imported below) or, in a test, :func:`register` with ``before=``.
"""

import importlib

from pipeline.stages.base import STAGES, Run, Stage, register

MODULES = ("data", "segmentation", "compositions", "llm", "captioners", "captions", "score")  # the order they run
for _module in MODULES:  # each registers its stages as it is imported
    importlib.import_module(f"pipeline.stages.{_module}")

__all__ = ["STAGES", "Run", "Stage", "register"]
