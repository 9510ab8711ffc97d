"""Files in and out: the saved inversion, its consistency checks, images, clips, prompts, staged outputs."""
