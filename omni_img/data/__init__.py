"""omni_img.data."""
