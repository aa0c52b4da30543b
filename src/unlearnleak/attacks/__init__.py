"""The two attacks, each seeing only what its threat model allows: ``feature_recovery`` (the server, white-box:
θ, θ_u and the declared knowledge) and ``label_inference`` (a user, black-box: two query-counting oracles).
``interface`` holds their facades, ``FeatureRecovery`` and ``LabelInference``."""
