"""The torch-free data layer: class tables, image and mask reading, and the dataset readers every part uses.

- :mod:`aerialdata.classes`: the drone set's 24 source classes and the 10-group class tables (``configs/classes/*.yaml``).
- :mod:`aerialdata.images`: read any image as RGB uint8 (at a reduced scale cheaply), read and write masks of group ids
  (palette PNG).
- :mod:`aerialdata.captionset`: the Karpathy-split caption JSON (RSICD, UCM, Sydney, Flickr8k/30k) and its images.
- :mod:`aerialdata.sources`: labelled segmentation sources: :class:`~aerialdata.sources.SourceSpec` (what a config
  declares), the :class:`~aerialdata.sources.LabelledSource` protocol every reader offers, ``open_source``, class maps
  (``configs/classes/maps/<kind>.yaml``) and ``IGNORE`` (255, the mask value of unlabelled pixels). The readers:

  - :mod:`aerialdata.drone`: the semantic drone dataset (``original_images/``, ``label_images_semantic/``);
  - :mod:`aerialdata.loveda`: LoveDA (``Train|Val/Urban|Rural/images_png``, ``masks_png``; 0.3 m per pixel);
  - :mod:`aerialdata.openearthmap`: OpenEarthMap (``<region>/images|labels/*.tif``, split lists; 0.25-0.5 m);
  - :mod:`aerialdata.folder`: any folder of image/mask pairs with a class-map YAML;
  - :mod:`aerialdata.labelled`: what they share (class maps, the synthetic marker, the paired reader).

Named so that it does not shadow Hugging Face's ``datasets``. It imports neither torch nor any other part of segcap
except :mod:`segcap` (errors, atomic writes), so ``synthetic``, ``evaluation`` and ``llm`` read data without the
segmentation stack.
"""
