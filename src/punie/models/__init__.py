"""The embedded models: corpus, tokenizer, model shapes, training and distillation."""
