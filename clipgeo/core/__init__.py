"""The ground floor: settings and the data home (:mod:`.config`), array checks and chunking
(:mod:`.arrays`), float64 accumulators and effective ranks (:mod:`.stats`), and the process's
memory (:mod:`.memory`). Nothing here imports another clipgeo layer."""
