"""omni_img.sampling."""
