"""The model: networks, the model card, and safe, checksummed loading of a model folder.

A *model folder* holds ``model_card.json`` plus the weight files it names:
``predictor.pt`` (the brain-age predictor) and, optionally, ``noise_model.pt``
(the noise model whose mask gives importance = 1 - B).

* ``card``: the card (input grid and normalisation, noise settings, age
  standardisation, bias correction, training record, weight checksums); torch-free.
* ``networks``: ``SFCNRegressor`` and ``NoiseUNet``.
* ``weights``: checksummed saving and ``weights_only`` loading of state dicts.
* ``bundle``: ``BrainAgeModel`` (a loaded folder), the bundled folder, the device.
"""
