"""omni_img.trainers."""
