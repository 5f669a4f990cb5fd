"""Training: base models, midtraining (LoRA or full), AFT data and AFT training.

Torch, transformers and peft are imported inside the functions that need them.
"""
