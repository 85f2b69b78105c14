"""The toy world: synthetic shapes drawn in styles, classifiers of both factors, and the toy base's pretraining.

The world exists so separation can be *seen and measured* offline: the subject of an image is its
shape, its style is how the shape is filled. :mod:`unziplora.toy.world` draws it (numpy + PIL, no
torch), :mod:`unziplora.toy.classify` recognises both factors, :mod:`unziplora.toy.base` and
:mod:`unziplora.toy.pretrain` build and train an SDXL-architecture base on it (an experiment so far:
see ``scripts/logs/pretrain_toy.log``).
"""
