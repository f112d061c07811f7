"""Synapses: contact sites between cells, sj candidates and their features, direction, the forests, training."""
