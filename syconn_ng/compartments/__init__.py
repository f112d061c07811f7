"""Compartments (axon / dendrite / soma, spine head / neck) and cell types with random forests on skeleton features."""
