"""Models: the interface methods see, the Gaussian oracle, decoder inversion, and the diffusers families."""
