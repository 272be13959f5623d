"""Models: the catalogue of named models, safe checkpoint loading, ncnn conversion."""
