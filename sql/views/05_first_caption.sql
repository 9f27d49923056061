-- An image's first caption: the one with the smallest sample_id (aggregate over an image's samples).
-- The same definition as the Python side's pairs (clipgeo.core.arrays.first_caption_pairs on
-- captions ordered by sample_id), used wherever a view shows an image with "its caption".
CREATE OR REPLACE MACRO first_caption(caption, sample_id) AS arg_min(caption, sample_id);
