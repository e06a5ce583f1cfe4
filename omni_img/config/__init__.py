"""omni_img.config."""
