"""PerContrast / PerCE: token-level personalization for LLM fine-tuning (arXiv 2603.06595)."""

__version__ = "0.1.0"
