"""The services behind the CLIs: what train.py does as one call, and what inspect_checkpoint.py prints."""
