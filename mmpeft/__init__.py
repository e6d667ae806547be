"""mmpeft: parameter-efficient fine-tuning of vision-language models.

Deliberately empty apart from the version: importing a submodule must not pull in Lightning or register anything.
"""

__version__ = "0.1.0"
