"""The entry points over the methods: invert, reconstruct, and replay in a stock diffusers pipeline."""
