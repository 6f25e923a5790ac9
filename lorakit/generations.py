"""The two library generations the kit is tested with, and the few calls that differ between them.

- current: transformers 5, diffusers 0.42, peft 0.21 (constraints.txt, `make lab` / `make test`);
- older: transformers 4.57, diffusers 0.35, peft 0.17, huggingface_hub < 1 (constraints-compat.txt,
  `make compat`), what many course machines and hosted notebooks still run.

Where the generations differ, the kit meets it in one place each: from_pretrained's dtype argument
(here), CLIP's module paths with or without "text_model." (`lorakit.formats.installed_name` and
`sd15_name`), and the tokenizer files and text-encoder keys of a saved pipeline (`lorakit.layout`).
"""

from __future__ import annotations

from diffusers.utils import deprecation_utils

# diffusers renamed from_pretrained's `torch_dtype` to `dtype` (0.36+; the old name still works there, with a warning)
DTYPE_KWARG = "dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype"
