"""Stethoscope: relevancy maps, logit lens and a hallucination warning for every family of the model layer."""
