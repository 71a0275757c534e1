"""Training ISFL networks: configuration, training crops, one step with every intervention, the loop.

* :mod:`~napari_isfl.training.config`: :class:`TrainingConfig` (dataclasses) and :func:`load_config`;
* :mod:`~napari_isfl.training.dataset`: deterministic random crops of the training cases;
* :mod:`~napari_isfl.training.step`: one step, the clean pass plus every intervened pass;
* :mod:`~napari_isfl.training.averaging`: the exponential moving average of the weights;
* :mod:`~napari_isfl.training.trainer`: the loop (``isfl train``): checkpoints, resume, validation, DDP.
"""
