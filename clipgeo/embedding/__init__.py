"""Turning images and captions into raw vectors: preprocessing (:mod:`.preprocess`), the
reference path (:mod:`.embed`), the fast image path (:mod:`.image_path`), caption batches
(:mod:`.text_batches`), the model's inference precision (:mod:`.precision`) and worker sizing
(:mod:`.workers`). Heavy imports (torch, torchvision) stay inside the functions."""
