"""omni_img.export."""
