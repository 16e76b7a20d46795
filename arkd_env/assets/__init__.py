"""What an engine is built from: models (hub, local, GGUF), tokenizers, data files and templates, the synthetic
suite, and the built teachers of the embedded presets with their cache."""
