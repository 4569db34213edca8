"""Finding experts: per-unit AP/AUROC scoring (one language vs the rest), LAPE, and expert sets."""
