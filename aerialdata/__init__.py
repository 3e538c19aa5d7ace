"""The torch-free data layer: class tables, image and mask reading, and the dataset readers every part uses.

- :mod:`aerialdata.classes`: the drone set's 24 source classes and the 10-group class tables (``configs/classes/*.yaml``).
- :mod:`aerialdata.images`: read any image as RGB uint8, read and write masks of group ids (palette PNG).
- :mod:`aerialdata.captionset`: the Karpathy-split caption JSON (RSICD, UCM, Sydney, Flickr8k/30k) and its images.
- :mod:`aerialdata.drone`: the semantic drone dataset (``original_images/``, ``label_images_semantic/``).

Named so that it does not shadow Hugging Face's ``datasets``. It imports neither torch nor any other part of segcap
except :mod:`segcap` (errors, atomic writes), so ``synthetic``, ``evaluation`` and ``llm`` read data without the
segmentation stack.
"""
