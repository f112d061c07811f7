"""Synthetic EM tissue with complete ground truth: cells of four types, synapses, organelles,
traced skeletons and raw EM, generated chunk by chunk from one geometry (`syconn-ng synth`)."""
