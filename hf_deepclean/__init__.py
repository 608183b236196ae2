"""hf_deepclean: DeepClean machine unlearning for Hugging Face image classifiers."""

__version__ = "0.1.0"
