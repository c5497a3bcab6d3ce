"""From files to training patches: sources, the normalizer, the dataset, the samplers."""
