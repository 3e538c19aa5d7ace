"""End-to-end image captioners (pixels -> caption), the baseline beside segcap's explainable chain.

* ``cnn-lstm``: Show, Attend and Tell: a torchvision backbone (mobilenet_v2, resnet50, vgg16) and an LSTM with soft
  attention over its feature map; word vocabulary; greedy or beam search (:mod:`captioners.cnn_lstm`).
* ``vit-gpt2``: transformers' VisionEncoderDecoderModel, a tiny one built offline or a checkpoint (:mod:`captioners.hf`).
* ``blip``: BlipForConditionalGeneration from a checkpoint, zero-shot or fine-tuned (:mod:`captioners.hf`).

The architectures are one table, :data:`captioners.registry.ARCHS` (name, pipeline system, options, training job,
loader, default config); a new one is its own module plus one entry there (and, for options of its own, an options
dataclass there and its parameter in ``captioners.train.main``). Commands: ``python -m captioners.train``
and ``python -m captioners.generate``; library: ``captioners.model.load_captioner(folder).caption(images)``.
"""
