"""Model wrappers (load, batch, predict), the scripts that build the ONNX files, and metadata.

The emotion, embedding and customer-feature models arrive with the models issue; the
spine's profile fields need none.
"""
