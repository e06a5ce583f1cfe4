"""omni_img.models."""
