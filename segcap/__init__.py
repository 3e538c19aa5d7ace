"""segcap core: what every entry point shares, and nothing else.

- :mod:`segcap.errors`: error types whose message says what, which file and how to fix; exit code 2.
- :mod:`segcap.options`: the options' types (bounds such as ``PositiveInt``), the runtime options (device, threads,
  workers, progress, overwrite, seed) and the one typed check of flags, configs, sections and direct calls.
- :mod:`segcap.cli`: runs an entry function as a CLI (``--config file.yaml`` plus flags) and maps errors to exit 2.
- :mod:`segcap.atomic`: write files and folders atomically (temp + rename), never overwriting without consent.
- :mod:`segcap.resources`: the configs and class tables shipped in the package (``segcap/configs``), found by name.
- :mod:`segcap.training`: the training protocol the three trainings share (output folder, lock, resume, options).
- :mod:`segcap.progress`, :mod:`segcap.workers`, :mod:`segcap.hub`: progress lines, worker processes, hub ids.

The pipeline's parts live in the top-level packages ``synthetic``, ``segmentation``, ``composition``, ``llm``,
``evaluation`` and ``pipeline`` (see README).
"""

__version__ = "0.1.0"
