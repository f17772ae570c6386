"""The equations and the device they run on: backend, model, optimizers, the training step and the textbook
reference. Imports nothing else of gpunet but errors, install and version."""
