"""Provenance of the PNGs omni_img writes: C2PA manifests (``c2pa_png``) signed with a
key and certificate chain the user supplies, or with a local test chain (``chain``)."""
