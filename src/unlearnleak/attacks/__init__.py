"""The two attacks, each seeing only what its threat model allows: ``feature_recovery`` (the server, white-box:
θ, θ_u and the declared knowledge) and ``label_inference`` (a user, black-box: two query-counting oracles).
Each attack's one config and one facade live beside it (``config.py``, ``facade.py``): ``FeatureRecovery`` and
``LabelInference``; ``interface`` imports both."""
