"""LoRA Lab web application: pages, instruments, JSON API and the training lab."""
