"""diffusers pipelines as models: one module per family, and the explicit loader (:mod:`.loader`)."""
