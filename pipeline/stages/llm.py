"""The fine-tune stages: llm.finetune on the compositions, one stage per kind of prompt (:data:`LLM_STAGES`).

Each serves the systems of :mod:`pipeline.systems` that decode with its model, and is skipped when none of them is
asked for (``llm``, the chain's own, always runs)."""

from __future__ import annotations

from dataclasses import dataclass

from llm.finetune import OUTPUTS_VERSION as FINETUNE_OUTPUTS
from llm.finetune import main as finetune_llm
from pipeline.stages.base import Run, Stage, added, call, register
from pipeline.systems import serving


@dataclass(frozen=True)
class LlmStage:
    """What one fine-tune stage trains on: the exact-mask compositions or the predicted ones (``truth``), the prompt
    mode, whether its prompts retrieve neighbours (with the pipeline's ``retrieval_k``; the others never do,
    whatever the llm config holds, so that each system means what its name says), its model folder under
    run_dir/llm, and whether it runs whatever systems are asked for (``always``)."""

    truth: bool
    prompt_mode: str
    retrieval: bool
    folder: str
    always: bool = False


LLM_STAGES: dict[str, LlmStage] = {
    "llm": LlmStage(False, "full", False, "pipeline", always=True),
    "oracle": LlmStage(True, "full", False, "oracle"),
    "blind": LlmStage(False, "blind", False, "blind"),
    "rag": LlmStage(False, "full", True, "pipeline_rag"),
    "rag_only": LlmStage(False, "blind", True, "rag_only"),
    "scene_only": LlmStage(False, "scene", False, "pipeline_scene"),
    "composition_only": LlmStage(False, "composition", False, "pipeline_composition"),
}
OPTIONAL = ("scene_only", "composition_only")  # counted upstream only when they run (added after runs existed)


@dataclass(frozen=True)
class LlmOptions:
    config: dict  # the checked options of llm_config
    options: dict  # the llm section, with the stage's retrieval settings on top
    outputs: int  # llm.finetune's outputs version
    wanted: bool | None = added(None)  # whether a system it serves is asked for (None: it always runs)


def wanted(run: Run, stage: str) -> bool:
    return LLM_STAGES[stage].always or any(run.wants(s) for s in serving(stage))


def llm_options(run: Run, stage: str) -> LlmOptions:
    retrieval = ({"retrieval_k": run.retrieval_k, "retrieval_captions": run.retrieval_captions}
                 if LLM_STAGES[stage].retrieval else {"retrieval_k": 0})
    return LlmOptions(run.llm_file, {**run.llm, **retrieval}, FINETUNE_OUTPUTS,
                      None if LLM_STAGES[stage].always else wanted(run, stage))


def run_llm(stage: str, run: Run, opts: LlmOptions, fresh: bool, commands: list[str]) -> dict:
    """llm.finetune for one of :data:`LLM_STAGES`; skipped when none of the systems it serves is asked for, or,
    for the oracle, when the caption set has no exact masks."""
    spec, lay = LLM_STAGES[stage], run.layout
    if opts.wanted is False:
        return {"status": "not asked for"}
    if spec.truth and not lay.truth.is_file():
        return {"status": f"skipped: the caption set has no exact masks ({lay.truth_masks.name}/)"}
    out = lay.llm(spec.folder)
    resume = not fresh and any((out / "checkpoints").glob("checkpoint-*"))
    model = call(commands, stage, finetune_llm, config=run.llm_config, file_options=opts.config, user=opts.options,
                 compositions=lay.truth if spec.truth else lay.predicted, captions=lay.references, out=out,
                 prompt_mode=spec.prompt_mode, resume=resume, overwrite=not resume, progress=run.progress)
    return {"model": str(model), "resumed": resume}


def _stage(name: str) -> Stage:
    spec = LLM_STAGES[name]
    return Stage(name, ("data", "compositions"), lambda lay: [lay.llm(spec.folder)],
                 lambda run: llm_options(run, name), lambda *a: run_llm(name, *a),
                 active=(lambda run: wanted(run, name)) if name in OPTIONAL else None)


for _name in LLM_STAGES:
    register(_stage(_name))
