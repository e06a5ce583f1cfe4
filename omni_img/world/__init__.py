"""The synthetic world: omni_shapes scenes, their captions and renderer, the TFDS
builder, and the judge that inverts the renderer (segmentation, OCR). Depends on
nothing in the package but `errors` and `preflight`."""
