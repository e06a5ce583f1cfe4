"""omni_img.evals."""
