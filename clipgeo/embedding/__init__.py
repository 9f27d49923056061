"""Turning images and captions into raw vectors: preprocessing (:mod:`.preprocess`), the
reference path (:mod:`.embed`) and the fast path (:mod:`.image_path`). Heavy imports (torch,
torchvision) stay inside the functions."""
