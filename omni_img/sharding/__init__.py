"""omni_img.sharding."""
