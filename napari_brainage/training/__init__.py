"""Training the predictor and the noise model: seeded, resumable, best-on-validation.

Both write into a model folder (``model_card.json`` + weights). Giving the
noise model the predictor's folder as ``out`` adds ``noise_model.pt`` to it;
another folder gets a copy of the predictor, so each folder is self-contained.

* ``config``: ``TrainConfig`` and each network's defaults (torch-free, checked when made).
* ``data``: the participants table, ``load_cohort`` (scans prepared as inference
  prepares them), the split by subject.
* ``augment``: patchy noise and blur for the predictor's inputs.
* ``loop``: epochs, batches, checkpoints, the output folder.
* ``predictor``: ``train_predictor``, ``predict_ages``.
* ``objective``: the U-Noise loss; ``noise_model``: ``train_noise_model``.
"""
