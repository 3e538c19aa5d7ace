"""Caption LM: composition text -> caption.

* :mod:`llm.examples`  - join compositions with a caption set (by filename stem), prompt template, duplicates
* :mod:`llm.tokenizer` - tokenizer training (tiny model), caption-only labels, batching
* :mod:`llm.model`     - base model (tiny or local checkpoint), nf4/int8, full/LoRA, option validation, loading
* :mod:`llm.finetune`  - ``python -m llm.finetune``: Trainer fine-tuning in epochs, eval loss, resume, loss curves
* :mod:`llm.generate`  - ``python -m llm.generate`` and :class:`llm.generate.Captioner`: greedy / beam captions
"""
