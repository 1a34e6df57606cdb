"""SLUG (Single Layer Unlearning Gradient): forget-set builder, gradients, layer selection, single-step unlearning."""
