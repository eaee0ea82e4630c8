"""Training, export, quantization and evaluation of the emotion CNN (needs the torch extra for
training and export). Runtime code never imports this package."""
