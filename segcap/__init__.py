"""segcap core: the three things every entry point shares, and nothing else.

- :mod:`segcap.errors`: error types whose message says what, which file and how to fix; exit code 2.
- :mod:`segcap.cli`: runs an entry function as a CLI (``--config file.yaml`` plus flags) and maps errors to exit 2.
- :mod:`segcap.atomic`: write files and folders atomically (temp + rename), never overwriting without consent.

The pipeline's parts live in the top-level packages ``synthetic``, ``segmentation``, ``composition``, ``llm``,
``evaluation`` and ``pipeline`` (see README).
"""

__version__ = "0.1.0"
