"""Image metrics and their reference ports: FID (Inception), CLIP score (CLIP and its
tokenizer), and the readers of their published weights."""
