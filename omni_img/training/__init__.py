"""omni_img.training."""
