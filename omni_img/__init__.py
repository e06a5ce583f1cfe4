"""omni_img: a JAX/Flax framework for a native image generator.

A multimodal encoder reads the prompt (and an input image when editing), an
autoregressive transformer writes visual tokens of a VQ tokenizer top to bottom,
and a rolling, band-by-band diffusion decoder turns those tokens into pixels.
"""

__version__ = "0.1.0"
