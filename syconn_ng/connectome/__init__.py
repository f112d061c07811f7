"""The wiring diagram: synapse tables → cell-by-cell matrices sorted by cell type (`matrix`), and their heat map (`plot`)."""
